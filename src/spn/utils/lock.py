"""An exclusive lock on a directory for its one writer (a training run holds its run directory).

:class:`DirLock` creates ``DIR/.lock``, holds an ``fcntl.flock`` on it for as long as the writer
lives, and writes the holder's PID, host and start time into it. A second writer, in this process
or another, gets :class:`LockedError` naming the holder's PID. The operating system drops a
``flock`` when its process dies, also under ``kill -9``: a lock file left by a killed process is
therefore free, is detected as stale (its PID no longer holds it) and is taken over.
:meth:`DirLock.release` removes the file. Where ``flock`` is not available (some network file
systems), the lock falls back to creating the file exclusively and treats a file whose PID is
not a live process on this host as stale.

Example:
    >>> import tempfile
    >>> from spn.utils.lock import DirLock, LockedError
    >>> d = tempfile.mkdtemp()
    >>> first = DirLock(d).acquire()
    >>> try:
    ...     DirLock(d).acquire()
    ... except LockedError as exc:
    ...     print("held by this process:", exc.pid == first.pid)
    held by this process: True
    >>> first.release()
    >>> DirLock(d).acquire().release()
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".lock"

# locks held by this process: path -> DirLock (flock locks are per open file, so a second
# DirLock on the same directory in the same process would otherwise succeed on some systems)
_HELD: dict[str, "DirLock"] = {}


class LockedError(RuntimeError):
    """The directory is locked by another writer; ``pid`` / ``host`` name the holder."""

    def __init__(self, message: str, pid: int | None = None, host: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.host = host


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path) -> dict:
    """The holder record of a lock file (``{"pid", "host", "since", "what"}``), or {} if unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class DirLock:
    """The writer's lock of ``directory`` (the file ``directory/.lock``); ``what`` says who holds
    it in the message a second writer gets (e.g. ``"spn train"``)."""

    def __init__(self, directory, what: str = "another writer"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self.pid = os.getpid()
        self._fd: int | None = None
        self.took_over: dict | None = None  # the stale holder's record, when one was taken over

    # ------------------------------------------------------------------------------------
    def _record(self) -> bytes:
        return (json.dumps({"pid": self.pid, "host": socket.gethostname(), "since": time.time(),
                            "what": self.what}) + "\n").encode()

    def _locked_error(self, holder: dict) -> LockedError:
        pid, host = holder.get("pid"), holder.get("host")
        since = holder.get("since")
        when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
        who = holder.get("what") or "another process"
        where = f" on {host}" if host and host != socket.gethostname() else ""
        return LockedError(f"{self.directory} is in use by {who} (PID {pid}{where}{when}); wait for it to finish "
                           f"or stop it, or choose another --out (lock file {self.path})", pid, host)

    def acquire(self) -> "DirLock":
        """Take the lock or raise :class:`LockedError`; returns self."""
        key = str(self.directory.resolve())
        if key in _HELD:
            raise self._locked_error({"pid": self.pid, "host": socket.gethostname(), "what": _HELD[key].what})
        if fcntl is None:
            self._acquire_exclusive_file()
        else:
            self._acquire_flock()
        _HELD[key] = self
        return self

    def _acquire_flock(self) -> None:
        while True:
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._locked_error(read_holder(self.path)) from None
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    self._acquire_exclusive_file()
                    return
                raise
            # the holder before us may have removed the file after we opened it: lock the file
            # that is at the path now, not an unlinked one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = read_holder(self.path)
            if old.get("pid") is not None:
                self.took_over = old  # a record without a live flock: its writer died
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._record(), 0)
            os.fsync(fd)
            self._fd = fd
            return

    def _acquire_exclusive_file(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                pid = holder.get("pid")
                same_host = holder.get("host") in (None, socket.gethostname())
                if isinstance(pid, int) and same_host and not pid_alive(pid):
                    self.took_over = holder
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise self._locked_error(holder) from None
            os.write(fd, self._record())
            os.fsync(fd)
            self._fd = fd
            return
        raise self._locked_error(read_holder(self.path))

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        _HELD.pop(str(self.directory.resolve()), None)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
