"""Subcommands of the ``proxyless`` command, one module each."""
