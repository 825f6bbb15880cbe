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
