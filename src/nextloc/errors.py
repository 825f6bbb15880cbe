"""Errors a user can fix: ``train.py`` prints their message and exits with code 2."""


class NextlocError(Exception):
    """Base of user-facing errors; the message alone must say what to do."""


class ConfigError(NextlocError):
    """An invalid configuration value."""


class DataError(NextlocError):
    """Missing, truncated or inconsistent data on disk."""


class RunInUse(NextlocError):
    """The run directory is being used by another process right now."""
