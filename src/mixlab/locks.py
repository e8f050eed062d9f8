"""Files that several processes build once and share (caches under an output folder): :func:`file_lock` lets one
process build while the others wait, then reuse what it built; :class:`RunLocked`, what the engine raises for a
run another process trains. The lowest layer (no mixlab imports)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


class RunLocked(RuntimeError):
    """Another live process is training the same run id in the same output folder (``mixlab.train.engine.run_lock``)."""


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

