"""Errors that are the user's to fix: the CLI prints them without a traceback and exits 2."""


class AetherError(Exception):
    """A problem with the user's input (config, data, weights) explained in its message."""
