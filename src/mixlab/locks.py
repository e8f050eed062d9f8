"""Locks between processes on one output folder. :func:`file_lock`: files that several processes build once and
share (caches), one builds while the others wait, then reuse what it built. :func:`run_lock`: the right to train
one run, refused at once (:class:`RunLocked`, naming the holder) when another process trains it. The lowest layer
(no mixlab imports)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path


class RunLocked(RuntimeError):
    """Another live process is training the same run id in the same output folder (:func:`run_lock`)."""


@contextlib.contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing; left in place) for the ``with`` block, waiting
    while another process holds it. The operating system drops the lock when its holder exits, however it exits.
    On a platform without ``fcntl`` (Windows) nothing is locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _lock_owner(fd: int) -> str:
    """The holder of a lock file, as its text says (``pid N on HOST``), for messages."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "its lock file is being written"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Exclusive right to train one run in one output folder: an exclusive ``flock`` on ``<run_dir>/lock``.

    A second process on the same run (e.g. two ``mixlab bench`` sharing an ``--out``) gets :class:`RunLocked`
    instead of writing the same checkpoint. The operating system drops the lock when its holder exits, however it
    exits, so a lock file left behind by a killed run is simply locked again; its text (pid and host of the
    holder) only serves the message. On a platform without ``fcntl`` (Windows) runs are not locked. A run folder
    this lock created and the run left empty (it failed before writing anything, e.g. on a missing dataset) is
    removed on the way out, so ``runs/`` lists only runs that did something.
    """
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:  # the previous holder removed the folder it had left empty: make it again
            run_dir.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _lock_owner(fd)
            os.close(fd)
            raise RunLocked(f"{run_dir.name} is being trained by another process ({who}); wait for it to "
                            f"finish, or use another --out") from None
        try:  # the holder may have finished and removed the file between our open and our lock: then again
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock, so nobody locks a file about to vanish
        if created:
            with contextlib.suppress(OSError):  # not empty (the run wrote something, or another process waits)
                run_dir.rmdir()
        os.close(fd)
