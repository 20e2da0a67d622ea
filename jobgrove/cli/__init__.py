"""The ``jobgrove`` command line: argument parsing (``main``), the commands, and what
they draw in the terminal (``render``, ``tails``, ``logs``)."""

from jobgrove.cli.main import main

__all__ = ["main"]
