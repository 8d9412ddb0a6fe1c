"""One owner per journal: an exclusive ``flock`` on ``LOCK`` in the journal directory.

Two servers appending to one journal both number their commands from the same
last seq: the journal then holds two histories interleaved, and a restart
silently keeps one of them. So :func:`gateway.serve` takes this lock before it
reads the journal and holds it until the journal is closed.

Rules of this module:

* The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<journal directory>/LOCK``
  (by default ``<data_dir>/journal/LOCK``: the journal is what must have one
  writer; the data directory's other file, the JWT secret, is written once and
  then only read, as ``trade-engine token`` does beside a running server). A
  server with the journal disabled writes nothing there and takes no lock.
* It never waits: a held lock is :class:`DataDirectoryLocked` at once, naming
  the directory and the holder's pid, which the holder writes into the file.
* ``flock`` locks belong to an open file description, not to a process (unlike
  ``fcntl``/``lockf`` record locks): two ``gateway.serve`` in one process
  exclude each other too, and closing any other descriptor of the file never
  drops the lock by accident. The descriptor is close-on-exec, so a child
  process never inherits it.
* The kernel releases the lock when its descriptor is closed, which a crash
  does too: a server killed with SIGKILL never leaves a stale lock, and the
  next one starts. The file itself stays (deleting it would race: a newcomer
  could lock the unlinked file while another locks a new one); its pid is only
  a message, never evidence that the lock is held.
* Read-only tools (``trade-engine journal verify`` and ``replay``) take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gateway._config import Config

LOCK_FILE = "LOCK"


class DataDirectoryLocked(Exception):
    """Another server (or another ``gateway.serve`` in this process) owns this directory.

    Attributes:
        directory: the data directory, or the journal directory when the
            configuration puts it elsewhere (``journal.directory``).
        lock_file: the file whose lock is held.
        pid: the holder's process id, or None when it could not be read.
    """

    def __init__(self, directory: Path, lock_file: Path, pid: int | None, fix: str) -> None:
        holder = "another trade-engine" if pid is None else f"another trade-engine (pid {pid})"
        super().__init__(f"{directory} is in use: {holder} holds the lock {lock_file}; "
                         f"stop it, or give this server {fix}")
        self.directory = directory
        self.lock_file = lock_file
        self.pid = pid


def lock_for(config: Config) -> contextlib.AbstractContextManager[None]:
    """The lock :func:`gateway.serve` holds: none when the journal is disabled."""
    if not config.journal.enabled:
        return contextlib.nullcontext()
    journal = config.journal_directory
    if journal == config.data_dir / "journal":
        return hold_lock(journal, config.data_dir,
                         "its own data directory (--data-dir, or data_dir in the configuration)")
    return hold_lock(journal, journal, "its own journal directory (journal.directory)")


@contextlib.contextmanager
def hold_lock(lock_dir: Path, name: Path, fix: str) -> Iterator[None]:
    """Own ``lock_dir`` (created if missing) for the duration of the ``with``.

    Args:
        lock_dir: where ``LOCK`` lives.
        name, fix: the directory the error names, and what it tells the user to do.

    Raises:
        DataDirectoryLocked: another open file description holds the lock.
        OSError: the directory or its lock file cannot be created or opened.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DataDirectoryLocked(name, path, _read_pid(fd), fix) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_pid(fd: int) -> int | None:
    """The pid the holder wrote; None if it has not written it yet (or wrote garbage)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
