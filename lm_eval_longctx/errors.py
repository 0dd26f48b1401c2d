"""The one exception type for user mistakes."""


class LongCtxError(ValueError):
    """A user mistake: the message names the value given and what to do instead.

    Subclasses ValueError so callers that already catch bad-argument errors keep working.
    """
