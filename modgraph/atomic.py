"""Atomic writes: outputs appear whole under their final name, or not at all.

Every writer in modgraph (GraphML, figures, saved analyses, the CLI's output directory) goes
through :func:`atomic_path`, so a failure late in a long run never leaves a half-written file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "default_mode"]


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path``.

    The temporary file (or directory, with ``directory=True``) lives in the same folder, so the
    final ``os.replace`` is atomic; it gets the permissions a plain ``open`` would give (temp
    files are created private). On any exception, even KeyboardInterrupt, it is removed and
    ``path`` is left as it was. An existing directory at ``path`` is replaced whole.

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
    parent = path.parent
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory))
        if directory and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
