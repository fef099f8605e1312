"""Output paths checked before the work that fills them: a replay of minutes, or a capture, must not end in an
``IsADirectoryError`` that loses its result. Each check raises :class:`~benchmint.core.errors.UserError` (one
line, exit 2) naming the flag."""

from __future__ import annotations

import os
from pathlib import Path

from benchmint.core.errors import UserError


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _creatable(flag: str, p: Path) -> None:
    """The folders up to ``p`` can be made: the nearest existing one is a folder this process may write in."""
    q = _nearest_existing(p)
    if not q.is_dir():
        raise UserError(f"{flag} {p}: {q} is a file, so no folder can be made under it")
    if not os.access(q, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p}: {q} is not writable by this user")


def check_output_file(flag: str, path: str | os.PathLike | None) -> None:
    """``path`` can be written as a file: not a folder, and its folder exists or can be made."""
    if path is None:
        return
    p = Path(path)
    try:
        if p.is_dir():
            raise UserError(f"{flag} {p}: a folder; give a file name (e.g. {p / 'result.json'})")
        _creatable(flag, p.parent)
    except OSError as e:  # a folder on the way this user may not look into
        raise UserError(f"{flag} {p}: cannot be written ({e.strerror or e})") from None


def check_output_dir(flag: str, path: str | os.PathLike | None) -> None:
    """``path`` can be a folder: not a file, and it exists (writable) or can be made."""
    if path is None:
        return
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise UserError(f"{flag} {p}: a file, not a folder")
        _creatable(flag, p)
    except OSError as e:
        raise UserError(f"{flag} {p}: cannot be written ({e.strerror or e})") from None
