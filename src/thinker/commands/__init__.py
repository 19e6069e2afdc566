"""Subcommands of the `thinker` console command, one module per noun (models, data, ...).

Each module exposes `register(subparsers)` adding its parser; handlers return an exit code.
"""
