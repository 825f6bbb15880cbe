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
    """The one-line :class:`StorageError` for an ``OSError`` caused by the storage, else None.

    The ``OSError`` may also be the cause or context of ``err`` (``torch.save``
    reports a full disk as a ``RuntimeError`` raised while handling it).
    """
    for _ in range(8):  # along the chain of causes, not forever
        if err is None:
            return None
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
            where = err.filename or "an output file"
            return StorageError(f"{where}: {STORAGE_ERRNOS[err.errno]}")
        err = err.__cause__ or err.__context__
    return None


class MemoryShortage(NextlocError):
    """The model or a batch does not fit into memory."""


def memory_error(err: BaseException) -> MemoryShortage | None:
    """One line for running out of memory (CPU or CUDA), else None."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)
    ):
        return MemoryShortage(f"not enough memory ({message[:160]}); use smaller model sizes or dataset.batch_size")
    return None
