"""Atomic writes: outputs appear whole under their final name, or not at all.

Every writer in modgraph (GraphML, figures, saved analyses, the report directory) goes through
this module, so a failure late in a long run never leaves a half-written file, and nothing
modgraph writes ever deletes or overwrites a file it did not create:

- a file is written to a temporary sibling and renamed over its target (:func:`atomic_path`);
- a directory is written to a temporary sibling and then moved into place
  (:func:`atomic_directory`). An existing directory is only ever replaced when every entry in it
  is one modgraph writes there (``owned``); it is first renamed aside, so at every instant one
  complete copy exists, and deleted only once the new one is in place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = ["atomic_path", "atomic_directory", "check_replaceable", "default_mode"]


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling file of ``path``; on success it replaces ``path``.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic; it gets
    the permissions a plain ``open`` would give (temp files are created private). On any
    exception, even KeyboardInterrupt, it is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_replaceable(
    path: Path, owned: Callable[[Path], bool], *, overwrite: bool, what: str
) -> None:
    """Raise unless a directory may be written at ``path``.

    It may when nothing is there, when an empty directory is there, or, with ``overwrite``, when
    a directory whose every entry is ``owned`` (one modgraph writes there) is there. ``what``
    names the argument in the message (e.g. ``"--out"``).
    """
    if not path.exists() and not path.is_symlink():
        _check_parent(path, what)
        return
    if not path.is_dir() or path.is_symlink():
        raise InputError(f"{what} {str(path)!r} exists and is not a directory")
    entries = sorted(path.iterdir())
    if not entries:
        return
    foreign = [p.name for p in entries if not owned(p)]
    if foreign:
        raise InputError(
            f"{what} {str(path)!r} holds files modgraph did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); choose another directory (modgraph never "
            "deletes what it did not write)"
        )
    if not overwrite:
        raise InputError(
            f"{what} {str(path)!r} already holds an earlier result; pass overwrite to replace it"
        )


def _check_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    if str(path) in ("", "."):
        raise InputError(f"{what} must name a directory, got {str(path)!r}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {str(path)!r} lies under {str(parent)!r}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r}: cannot write in {str(parent)!r}")


@contextmanager
def atomic_directory(
    path: str | os.PathLike,
    owned: Callable[[Path], bool],
    *,
    overwrite: bool = False,
    what: str = "path",
) -> Iterator[Path]:
    """Yield a temporary sibling directory of ``path``; on success it becomes ``path``.

    ``path`` is checked first (:func:`check_replaceable`) and again just before the swap. On any
    exception, even KeyboardInterrupt or SystemExit (SIGTERM in the CLI), the temporary
    directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_replaceable(path, owned, overwrite=overwrite, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Names are drawn before anything is created, so that cleanup after an interrupt at any
    # point (SIGTERM lands between any two bytecodes) knows what to remove.
    tmp = _fresh_name(path)
    try:
        os.mkdir(tmp, 0o700)
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        check_replaceable(path, owned, overwrite=overwrite, what=what)
        if not path.is_dir():
            os.replace(tmp, path)
            return
        old = _fresh_name(path, ".old")
        os.rename(path, old)  # the earlier result, complete, moves aside
        try:
            os.replace(tmp, path)
        except BaseException:
            os.rename(old, path)  # put the earlier result back
            raise
        shutil.rmtree(old)  # only entries modgraph wrote (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fresh_name(path: Path, tag: str = "") -> Path:
    """A hidden sibling name of ``path`` that nothing uses."""
    while True:
        name = path.parent / f".{path.name}{tag}.{secrets.token_hex(4)}"
        if not os.path.lexists(name):
            return name
