"""Atomic writes: outputs appear whole under their final name, or not at all.

Every writer in modgraph (GraphML, figures, saved analyses, the report directory) goes through
this module, so a failure late in a long run never leaves a half-written file, and nothing
modgraph writes ever deletes or overwrites a file it did not create:

- a file is written to a temporary sibling and renamed over its target (:func:`atomic_path`);
- a directory is written to a temporary sibling and then moved into place
  (:func:`atomic_directory`), with a manifest (:data:`MANIFEST`) of every file it holds and
  its SHA-256. Ownership is by that record, never by name: an existing directory is replaced
  only when every entry in it is listed there and unchanged. It is first renamed aside, so at
  every instant one complete copy exists, and then deleted entry by entry from the manifest;
  anything else found in it is kept;
- whatever is replaced keeps its permissions.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

__all__ = [
    "atomic_path",
    "atomic_directory",
    "check_replaceable",
    "default_mode",
    "foreign_entries",
    "MANIFEST",
]

#: The file in every directory modgraph writes that records what it wrote there: each file's
#: path, size and SHA-256. A directory is modgraph's to replace only as far as it says.
MANIFEST = ".modgraph-manifest.json"


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling file of ``path``; on success it replaces ``path``.

    The temporary file lives in the same folder, so the final ``os.replace`` is atomic; it gets
    the permissions of the file it replaces, or those a plain ``open`` would give (temp files
    are created private). On any
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
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_replaceable(path: Path, *, overwrite: bool, what: str) -> None:
    """Raise unless a directory may be written at ``path``, before any work is done.

    It may when nothing is there, when an empty directory is there, or, with ``overwrite``,
    when a directory modgraph wrote is there and holds only what its manifest lists, unchanged.
    Every case needs a writable parent (the new copy is built beside it). ``what`` names the
    argument in the message (``"--out"`` in the CLI, ``"out"`` or ``"path"`` in the API).
    """
    if not path.exists() and not path.is_symlink():
        _check_parent(path, what)
        return
    if not path.is_dir() or path.is_symlink():
        raise InputError(f"{what} {str(path)!r} exists and is not a directory")
    _check_parent(path, what)
    if not any(path.iterdir()):
        return
    foreign = foreign_entries(path)
    if foreign:
        more = f", ... ({len(foreign)} in all)" if len(foreign) > 5 else ""
        shown = ", ".join(foreign[:5]) + more
        raise InputError(
            f"{what} {str(path)!r} holds files modgraph did not write, or changed since it "
            f"wrote them ({shown}); modgraph never deletes or replaces those: choose another "
            "directory, or move them out first"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r}: cannot write in it (permissions)")
    if not overwrite:
        flag = "--overwrite" if what.startswith("--") else "overwrite=True"
        raise InputError(
            f"{what} {str(path)!r} already holds an earlier result modgraph wrote (every file "
            f"is in its manifest, unchanged); pass {flag} to replace it"
        )


def _check_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    if str(path) in ("", "."):
        raise InputError(f"{what} must name a directory, got {str(path)!r}")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {str(path)!r} lies under {str(parent)!r}, which is a file")
    problem = None if os.access(parent, os.W_OK | os.X_OK) else "permissions"
    if problem is None:  # permissions do not tell of a read-only file system (or for root)
        probe = _fresh_name(parent / "probe")
        try:
            os.mkdir(probe, 0o700)
            os.rmdir(probe)
        except OSError as err:
            problem = err.strerror or type(err).__name__
    if problem:
        raise InputError(f"{what} {str(path)!r}: cannot write in {str(parent)!r} ({problem})")


# ---------------------------------------------------------------------------- the manifest
def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(directory: Path) -> Iterator[Path]:
    """Every entry under ``directory`` (files, folders, links), parents before children."""
    for entry in sorted(directory.iterdir()):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk(entry)


def write_manifest(directory: Path) -> None:
    """Record every file under ``directory`` (relative path, size, SHA-256) in its manifest."""
    files = {
        p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": _digest(p)}
        for p in _walk(directory)
        if p.is_file() and not p.is_symlink() and p != directory / MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"modgraph_manifest": 1, "files": files}))


def _manifest(directory: Path) -> dict[str, dict] | None:
    """The files the manifest of ``directory`` lists, or None without a readable one."""
    path = directory / MANIFEST
    if not path.is_file() or path.is_symlink():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, UnicodeDecodeError, OSError, KeyError, TypeError):
        return None
    if not isinstance(files, dict):
        return None
    # only looked up by the relative paths of what the directory holds (never walked itself),
    # so an entry such as "../x" can make nothing outside the directory modgraph's
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def _ours(entry: Path, rel: str, files: dict[str, dict]) -> bool:
    """Whether ``entry`` is unchanged from what the manifest records (a folder: holds one)."""
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return any(k.startswith(rel + "/") for k in files)
    record = files.get(rel)
    return (
        record is not None and entry.is_file() and entry.stat().st_size == record.get("size")
        and _digest(entry) == record.get("sha256")
    )  # fmt: skip


def foreign_entries(directory: Path) -> list[str]:
    """Entries under ``directory`` that its manifest does not list as written, unchanged."""
    files = _manifest(directory)
    entries = [(p, p.relative_to(directory).as_posix()) for p in _walk(directory)]
    if files is None:
        return [rel for p, rel in entries if p.parent == directory]
    return [rel for p, rel in entries if rel != MANIFEST and not _ours(p, rel, files)]


def _remove_recorded(directory: Path) -> list[str]:
    """Delete, entry by entry, what the manifest of ``directory`` lists and is unchanged; the
    folders this empties, then ``directory`` if empty. Returns what was kept."""
    files = _manifest(directory) or {}
    entries = [(p, p.relative_to(directory).as_posix()) for p in _walk(directory)]
    for p, rel in entries:
        if rel in files and _ours(p, rel, files):
            p.unlink()
    for p, _ in reversed(entries):  # children before parents
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()
    if files and (directory / MANIFEST).is_file():
        (directory / MANIFEST).unlink()
    kept = [p.relative_to(directory).as_posix() for p in _walk(directory)]
    if not kept:
        directory.rmdir()
    return kept


def _modes(directory: Path) -> dict[str, int]:
    """Permission bits of every entry under ``directory`` (and of itself, as "")."""
    modes = {"": stat.S_IMODE(directory.stat().st_mode)}
    for p in _walk(directory):
        if not p.is_symlink():
            modes[p.relative_to(directory).as_posix()] = stat.S_IMODE(p.stat().st_mode)
    return modes


@contextmanager
def atomic_directory(
    path: str | os.PathLike, *, overwrite: bool = False, what: str = "path"
) -> Iterator[Path]:
    """Yield a temporary sibling directory of ``path``; on success it becomes ``path``.

    ``path`` is checked first (:func:`check_replaceable`) and again just before the swap. On
    success the new directory gets a manifest of what it holds; a replaced earlier copy is
    renamed aside, the new one moved in, and the old one deleted entry by entry from its
    manifest (anything else found there, e.g. a file created meanwhile, is kept and named in a
    warning). Files and folders that existed before keep their permissions. On any exception,
    even KeyboardInterrupt or SystemExit (SIGTERM in the CLI), the temporary directory is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    check_replaceable(path, overwrite=overwrite, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Names are drawn before anything is created, so that cleanup after an interrupt at any
    # point (SIGTERM lands between any two bytecodes) knows what to remove.
    tmp = _fresh_name(path)
    try:
        os.mkdir(tmp, 0o700)
        yield tmp
        write_manifest(tmp)
        check_replaceable(path, overwrite=overwrite, what=what)
        modes = _modes(path) if path.is_dir() else {"": default_mode(directory=True)}
        for p in [tmp, *_walk(tmp)]:
            rel = "" if p == tmp else p.relative_to(tmp).as_posix()
            os.chmod(p, modes.get(rel, default_mode(directory=p.is_dir())))
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
        kept = _remove_recorded(old)
        if kept:
            warnings.warn(
                f"{what}: kept files modgraph did not write, found in the earlier result while "
                f"replacing it, in {str(old)!r}: {', '.join(kept[:5])}",
                stacklevel=3,
            )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fresh_name(path: Path, tag: str = "") -> Path:
    """A hidden sibling name of ``path`` that nothing uses."""
    while True:
        name = path.parent / f".{path.name}{tag}.{secrets.token_hex(4)}"
        if not os.path.lexists(name):
            return name
