"""Atomic file writes (a temporary file in the same folder, fsync, then ``os.replace``), strict
JSON, and the one-line messages of operating-system errors.

A reader never sees a half-written file: every writer of spn goes through
:func:`atomic_write_bytes`. When a write fails (no space left, permission denied, the target is
a directory...) the temporary file is removed, the old file (if any) is left as it was, and the
error is an :class:`OSError` whose message names the target: :func:`os_error_message` turns it
into the one line the ``spn`` console script prints. :func:`write_json` writes strict JSON (NaN
and infinities become ``null``; tensors, arrays, tuples, paths and dataclasses become plain JSON
types). :func:`fsync_dir` makes a rename durable; :func:`check_output_path` checks an output
path before a command spends time computing what it will write there; :func:`sha256_file` hashes
a file in blocks (the corpus's records, the mask sets' package archives).

Example:
    >>> import json, math, tempfile
    >>> from pathlib import Path
    >>> from spn.utils.io import write_json
    >>> p = write_json(Path(tempfile.mkdtemp()) / "m.json", {"miou": math.nan, "shape": (2, 3)})
    >>> json.loads(p.read_text())
    {'miou': None, 'shape': [2, 3]}
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping


def sha256_file(path) -> str:
    """The SHA-256 of the file at ``path``, hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CorruptFileError(ValueError):
    """A file exists but cannot be decoded (truncated, not an image, bad header...)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: ``"cannot write runs/x/log.jsonl: No space left on device"``
    (the message of an error raised by :func:`atomic_write_bytes`), or ``"STRERROR: FILENAME"``.

    Example:
        >>> import errno
        >>> from spn.utils.io import os_error_message
        >>> os_error_message(PermissionError(errno.EACCES, "Permission denied", "/data/run"))
        'Permission denied: /data/run'
    """
    if getattr(exc, "spn_message", None):
        return exc.spn_message
    text = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n]
    return f"{text}: {' -> '.join(str(n) for n in names)}" if names else text


def annotate_os_error(exc: OSError, what: str, path) -> OSError:
    """``exc`` with a message naming the action and ``path`` (kept in ``exc.spn_message``)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    exc.spn_message = f"{what} {path}: {reason}"
    return exc


def fsync_dir(path) -> None:
    """Flush a directory's entries (renames, new files) to disk; a no-op where directories cannot
    be opened (Windows)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except (IsADirectoryError, PermissionError, FileNotFoundError, NotADirectoryError):
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _write_all(f, data: bytes) -> None:
    """Write ``data`` to the open file ``f`` (the seam where the tests inject a full disk)."""
    f.write(data)


def write_file_durably(path: Path, data: bytes) -> None:
    """Write ``data`` into the new file ``path`` (it must not exist) and fsync it; the caller
    renames it into place. On failure the partial file is removed."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise annotate_os_error(IsADirectoryError(errno.EISDIR, "it is a directory", str(path)), "cannot write", path)
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise annotate_os_error(NotADirectoryError(errno.ENOTDIR, f"{p} is not a directory", str(path)),
                                "cannot write", path)
            break


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (parent folders are created): a temporary
    file in the same folder, fsync, rename over ``path``, fsync of the folder. Returns the Path.

    On failure nothing is left behind (no temporary file; an existing ``path`` keeps its old
    content) and the OSError's :func:`os_error_message` is ``"cannot write PATH: REASON"``."""
    path = Path(path)
    try:
        _check_target(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise annotate_os_error(exc, "cannot write", path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise annotate_os_error(exc, "cannot write", path)
        raise
    fsync_dir(path.parent)
    return path


def check_output_path(path, flag: str = "output", *, directory: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: an output file must not be an
    existing directory (``directory=False``), an output folder not an existing file, and the
    nearest existing ancestor must be a writable directory. Raises an OSError naming ``flag``.

    Example:
        >>> import tempfile
        >>> from spn.utils.io import check_output_path, os_error_message
        >>> d = tempfile.mkdtemp()
        >>> try:
        ...     check_output_path(d, "--report")
        ... except OSError as exc:
        ...     print(os_error_message(exc).replace(d, "DIR"))
        --report DIR is a directory; give the path of a file
    """
    p = Path(path)

    def fail(cls, code, text):
        exc = cls(code, text, str(p))
        exc.spn_message = f"{flag} {p} {text}"
        raise exc

    if p.exists():
        if directory and not p.is_dir():
            fail(NotADirectoryError, errno.ENOTDIR, "is a file, not a folder")
        if not directory and p.is_dir():
            fail(IsADirectoryError, errno.EISDIR, "is a directory; give the path of a file")
    anc = p if (directory and p.is_dir()) else p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        fail(NotADirectoryError, errno.ENOTDIR, f"cannot be created: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        fail(PermissionError, errno.EACCES, f"cannot be written: permission denied in {anc}")
    return p


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    """``json.dumps(obj)`` written atomically (plain JSON types only; see :func:`write_json`)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json(path, what: str = "JSON file"):
    """The content of a JSON file; a missing file -> FileNotFoundError, bad JSON -> ValueError,
    both naming ``what`` and the path (e.g. ``what="config file"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc})") from None


def to_jsonable(obj):
    """Plain JSON types: NaN/inf -> None, tensors/arrays -> lists, tuples -> lists, Paths -> str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict
        return to_jsonable(asdict(obj))
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def write_json(path, obj, indent: int = 2) -> Path:
    """``obj`` as strict JSON (NaN -> null), atomically."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def write_markdown(path, text: str) -> Path:
    """``text`` (ending with a newline) written atomically."""
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")
