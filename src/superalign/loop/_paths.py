"""Files of a run directory are never written through a symbolic link planted there.

A link in place of ``report.html`` or of ``runs/NAME`` itself could point at any file or
directory the user may write; following it would overwrite that instead of the run's
own file. Such a link is refused with a ``StoreError`` naming it and its target.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import StoreError


def refuse_link(path: Path, what: str, fix: str = "remove the link") -> None:
    """Raise ``StoreError`` when ``path`` is a symbolic link (a dangling one too)."""
    if path.is_symlink():
        raise StoreError(_message(path, what, fix))


def write_text_unlinked(path: Path, text: str, what: str, fix: str = "remove the link") -> Path:
    """Write ``text`` (UTF-8) to ``path``, created or truncated, never through a symbolic
    link: one there is refused, also one put in place after the check (``O_NOFOLLOW``)."""
    refuse_link(path, what, fix)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StoreError(_message(path, what, fix)) from e
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _message(path: Path, what: str, fix: str) -> str:
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return (
        f"{path} is a symbolic link{target}; superalign does not write {what} through a "
        f"link, which could overwrite something outside the run. Nothing was written; {fix}."
    )
