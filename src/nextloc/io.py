"""Atomic writes (a file or folder appears complete or not at all) and an exclusive lock on a file."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from datetime import datetime
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # flock unsupported, not "held by another process"


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; results are as readable as any file the user writes
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


@contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary folder that is renamed to ``path`` when the block succeeds.

    Raises ``FileExistsError`` if ``path`` exists when the rename happens (for
    instance because a concurrent writer finished first); the temporary folder
    is removed on any failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a shared data set must be readable by colleagues
    try:
        yield tmp
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        try:
            os.rename(tmp, path)
        except OSError as err:  # lost a race against another writer
            raise FileExistsError(f"{path} already exists") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove what killed atomic writes of ``folder/<name>`` left behind; return the removed paths.

    Call it only while holding the lock that every writer of those files
    holds: then no temporary file there belongs to a live process.
    """
    removed = sorted(Path(folder).glob(f".{name}.*.tmp"))
    for tmp in removed:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), folder)
    return removed


@contextmanager
def exclusive_lock(path: str | os.PathLike, wait: bool = False, remove: bool = False):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    When another process holds it, wait for it with ``wait`` (logging the
    holder's pid and since when, which every holder writes into the file),
    else raise ``BlockingIOError`` at once. The operating system drops the lock when its
    holder ends, however it ends (``kill -9`` included), so a lock file left
    behind never blocks anyone. With ``remove`` the holder deletes the file
    when the block ends; a waiter that then finds it has locked a deleted file
    opens the new one and locks that instead. On a file system without locks
    (some cluster file systems) the block runs unlocked, with a warning.
    """
    path = Path(path)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)  # again after a holder that removed its folder
        file = open(path, "a")
        try:
            locked = _lock(file, path, wait)
        except BaseException:
            file.close()
            raise
        if not (remove and locked) or _is_current(file, path):
            break
        file.close()  # the previous holder removed the file between our open and our lock
    if locked:  # say who holds it, for whoever waits
        file.truncate(0)
        file.write(f"pid {os.getpid()} since {datetime.now().isoformat(timespec='seconds')}\n")
        file.flush()
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        if locked:
            fcntl.flock(file, fcntl.LOCK_UN)
        file.close()


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lock(file, path: Path, wait: bool) -> bool:
    """Lock ``file``; False when the file system has no locks. A waiter logs who holds the lock."""
    try:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise
            holder = path.read_text().strip() if path.is_file() else ""
            log.info("waiting for the lock %s, held by %s", path, holder or "another process")
            fcntl.flock(file, fcntl.LOCK_EX)
    except OSError as err:
        if err.errno not in NO_LOCKS:
            raise
        log.warning("%s: the file system does not lock files (%s); going on without the lock", path, err)
        return False
    return True


def _is_current(file, path: Path) -> bool:
    """Whether the open ``file`` is still the file at ``path``."""
    try:
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False
