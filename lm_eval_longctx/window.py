"""The contract between tasks and models for prompts longer than the model's window.

A model wrapper that refuses to cut a prompt returns ``BEYOND_WINDOW`` as that request's
generation; the tasks score it as "beyond the window" (counted, never as a wrong answer).
"""

BEYOND_WINDOW = "<<longctx:beyond-window>>"
