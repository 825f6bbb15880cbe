"""Atomic writes and the run directory's lock."""

import errno
import fcntl
import subprocess
import sys
import threading

import pytest

from nextloc.io import exclusive_lock, write_json

HOLD = """
import sys, time
from nextloc.io import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_held_lock_refuses_others_at_once_and_dies_with_its_holder(tmp_path):
    lock = tmp_path / "run" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BlockingIOError), exclusive_lock(lock):
            pass
    finally:
        holder.kill()  # SIGKILL: no chance to unlock
        holder.wait()
    with exclusive_lock(lock):
        pass
    with exclusive_lock(lock):  # released at the end of the block
        pass


def test_a_waiting_lock_is_taken_once_its_holder_ends(tmp_path):
    lock = tmp_path / ".data.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    taken = threading.Event()

    def wait_for_the_lock():
        with exclusive_lock(lock, wait=True):
            taken.set()

    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        assert not taken.wait(0.5)
    finally:
        holder.kill()
        holder.wait()
    waiter.join(timeout=30)
    assert taken.is_set()


def test_a_failed_write_leaves_the_old_file(tmp_path):
    file = tmp_path / "results.json"
    write_json(file, {"a": 1})
    with pytest.raises(TypeError):
        write_json(file, {"a": object()})
    assert file.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_without_file_locks_the_block_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    """As on cluster file systems mounted without lock support (flock fails with ENOLCK)."""

    def no_locks(file, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = False
    with exclusive_lock(tmp_path / ".lock"):
        ran = True
    assert ran and "does not lock files" in caplog.text


class TestRemovedLock:
    def test_the_holder_removes_the_file_and_a_waiter_relocks_the_new_one(self, tmp_path, monkeypatch):
        """A waiter that locked the removed file must not share the lock with a newcomer on the new file."""
        import threading

        from nextloc import io

        path = tmp_path / ".x.lock"
        opened, order, current = threading.Event(), [], []
        lock, is_current = io._lock, io._is_current

        def lock_after_open(file, p, wait):
            if threading.current_thread() is not threading.main_thread():
                opened.set()  # the waiter holds the old file open: the holder may now remove it
            return lock(file, p, wait)

        monkeypatch.setattr(io, "_lock", lock_after_open)
        monkeypatch.setattr(io, "_is_current", lambda f, p: current.append(is_current(f, p)) or current[-1])

        def waiter():
            with exclusive_lock(path, wait=True, remove=True):
                order.append("waiter in")
                with pytest.raises(BlockingIOError):  # the file at path is the one this waiter holds
                    with exclusive_lock(path):
                        pass
                order.append("waiter out")

        with exclusive_lock(path, wait=True, remove=True):
            thread = threading.Thread(target=waiter)
            thread.start()
            assert opened.wait(10)
        thread.join(10)
        assert order == ["waiter in", "waiter out"] and not path.exists()
        assert current[:2] == [True, False]  # the holder's own check, then the waiter found its file removed


class TestLockHolder:
    def test_a_waiter_says_whom_it_waits_for(self, tmp_path, caplog):
        import os
        import threading
        import time

        path = tmp_path / ".x.lock"
        caplog.set_level("INFO", logger="nextloc.io")
        with exclusive_lock(path):
            thread = threading.Thread(target=lambda: exclusive_lock(path, wait=True).__enter__())
            thread.daemon = True
            deadline = time.monotonic() + 10
            thread.start()
            while "waiting for the lock" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        thread.join(10)
        assert f"held by pid {os.getpid()} since " in caplog.text


WORKER_PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from nextloc.data.preprocess import die_with_parent
from nextloc.io import exclusive_lock

def work(out):
    with open(out, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

lock, out = sys.argv[1], sys.argv[2]
with exclusive_lock(lock, wait=True):
    pool = ProcessPoolExecutor(1, initializer=die_with_parent, initargs=(os.getpid(),))
    pool.submit(work, out)
    time.sleep(120)
"""


class TestWorkersDieWithTheirParent:
    def test_after_kill_9_of_the_parent_no_worker_holds_the_lock(self, tmp_path):
        """A preprocessing parent killed with -9 while its worker runs: the worker ends, the lock is free."""
        import signal
        import subprocess
        import sys
        import time

        lock, out = tmp_path / ".data.lock", tmp_path / "worker.pid"
        parent = subprocess.Popen([sys.executable, "-c", WORKER_PARENT, str(lock), str(out)])
        try:
            deadline = time.monotonic() + 60
            while not (out.is_file() and out.read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            worker = int(out.read_text())
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)
            deadline = time.monotonic() + 10
            while _alive(worker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(worker)
            with exclusive_lock(lock):  # at once, without waiting
                pass
        finally:
            parent.kill()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


class TestPermissions:
    def test_atomic_files_and_folders_follow_the_umask(self, tmp_path):
        """With umask 022 a colleague can read a result file and list a data set folder."""
        import os

        from nextloc.io import atomic_directory, write_atomic

        old = os.umask(0o022)
        try:
            write_atomic(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
            with atomic_directory(tmp_path / "data") as tmp:
                (tmp / "a.parquet").write_text("x")
        finally:
            os.umask(old)
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o755


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from nextloc.io import atomic_directory, write_atomic

def die(tmp):
    tmp.write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)

folder = Path(sys.argv[1])
if sys.argv[2] == "file":
    write_atomic(folder / "last.pt", die)
else:
    with atomic_directory(folder / "data") as tmp:
        die(tmp / "locations.parquet")
"""


class TestTemporariesOfKilledWrites:
    @pytest.mark.parametrize("kind", ["file", "folder"])
    def test_a_write_killed_with_9_leaves_a_temporary_that_the_next_start_removes(self, tmp_path, kind):
        from nextloc.io import remove_temporaries

        (tmp_path / "best.pt").write_text("kept")
        subprocess.run([sys.executable, "-c", KILLED_WRITE, str(tmp_path), kind], timeout=60)
        left = [p for p in tmp_path.iterdir() if p.name != "best.pt"]
        assert len(left) == 1 and left[0].name.endswith(".tmp"), "the killed write left no temporary to clean up"
        assert remove_temporaries(tmp_path) == left
        assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
