"""Folder listings for the datasets: a short tree of a folder (for layout errors) and name
lists (split files).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from spn.data.io import read_name_list
    >>> f = Path(tempfile.mkdtemp()) / "train.txt"
    >>> _ = f.write_text(chr(10).join(["# a split", "a", "1 , b"]))
    >>> read_name_list(f)
    ['a', 'b']
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["read_name_list", "tree"]


def tree(root, depth: int = 2, max_entries: int = 8) -> str:
    """A short ``tree``-style listing of ``root`` (for layout errors)."""
    root = Path(root)
    if not root.exists():
        return f"{root}  (does not exist)"
    if not root.is_dir():
        return f"{root}  (not a directory)"
    lines = [f"{root}/"]

    def walk(d: Path, prefix: str, level: int):
        try:
            entries = sorted(d.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        except OSError as exc:
            lines.append(f"{prefix}(unreadable: {exc})")
            return
        shown = entries[:max_entries]
        for e in shown:
            lines.append(f"{prefix}{e.name}{'/' if e.is_dir() else ''}")
            if e.is_dir() and level < depth:
                walk(e, prefix + "    ", level + 1)
        if len(entries) > len(shown):
            lines.append(f"{prefix}... ({len(entries) - len(shown)} more)")

    walk(root, "    ", 1)
    return "\n".join(lines)


def read_name_list(path) -> list[str]:
    """One name a line; blank lines and ``#`` comments skipped; ``"N , NAME"`` / ``"N NAME"``
    lines give ``NAME`` (the HELEN split-file style)."""
    path = Path(path)
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in line.replace(",", " ").split() if p]
        if len(parts) >= 2 and parts[0].isdigit():
            names.append(parts[-1])
        else:
            names.append(parts[0] if len(parts) == 1 else line)
    return names
