import sys

from lm_eval_longctx.cli import main

sys.exit(main())
