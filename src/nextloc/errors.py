"""Errors a user can fix: ``train.py`` prints their message and exits with code 2."""

import errno


class NextlocError(Exception):
    """Base of user-facing errors; the message alone must say what to do."""


class ConfigError(NextlocError):
    """An invalid configuration value."""


class DataError(NextlocError):
    """Missing, truncated or inconsistent data on disk."""


class RunInUse(NextlocError):
    """The run directory is being used by another process right now."""


class RunOfAnotherConfig(ConfigError):
    """The run directory holds a run of another config or data set: it is left exactly as it is."""


class StorageError(NextlocError):
    """A full disk, a read-only or forbidden folder: the environment, not the code."""


STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EACCES: "permission denied; write elsewhere or change the folder's permissions",
    errno.EPERM: "operation not permitted; write elsewhere or change the folder's permissions",
}


def storage_error(err: BaseException) -> StorageError | None:
    """The one-line :class:`StorageError` for an ``OSError`` caused by the storage, else None."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        where = err.filename or "an output file"
        return StorageError(f"{where}: {STORAGE_ERRNOS[err.errno]}")
    return None
