"""Subcommands of the ``spn`` console script (see :mod:`spn.cli`)."""
