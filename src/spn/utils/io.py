"""Atomic file writes (a temporary file in the same folder, then ``os.replace``) and strict JSON.

A reader never sees a half-written file: every writer of spn goes through
:func:`atomic_write_bytes`. :func:`write_json` writes strict JSON (NaN and infinities become
``null``; tensors, arrays, tuples, paths and dataclasses become plain JSON types).

Example:
    >>> import json, math, tempfile
    >>> from pathlib import Path
    >>> from spn.utils.io import write_json
    >>> p = write_json(Path(tempfile.mkdtemp()) / "m.json", {"miou": math.nan, "shape": (2, 3)})
    >>> json.loads(p.read_text())
    {'miou': None, 'shape': [2, 3]}
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created); returns the Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
