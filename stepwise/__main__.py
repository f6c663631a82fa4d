"""`python -m stepwise`: the command line, as the `stepwise` script runs it."""

import sys

from stepwise.pipeline.cli import main

sys.exit(main())
