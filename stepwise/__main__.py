"""`python -m stepwise`: the command line, as the `stepwise` script runs it."""

from stepwise.pipeline.cli import run

run()
