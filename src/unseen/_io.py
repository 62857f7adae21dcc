"""Atomic writes of files and whole directories: a reader sees the old one or the complete new
one, never a half."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The temporary file gets the permissions a plain ``open(path, "w")`` would (mkstemp's are
    owner-only). On any error it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")



# -- directories written whole ------------------------------------------------------------------
#: a temporary sibling whose name carries no live process id is stale after this long
STALE_SECONDS = 3600.0


def temp_sibling(target: Path, suffix: str = ".tmp") -> Path:
    """A new empty directory ``.NAME.PID.xxxx<suffix>`` beside ``target``.

    The process id in the name lets a later writer tell a leftover of a killed process (stale,
    see :func:`clean_stale_siblings`) from a write still in progress.
    """
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=suffix,
                                 dir=target.parent))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_siblings(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` that killed writers left behind.

    A sibling ``.NAME.PID.xxxx.tmp`` (or ``.old``) is stale when process PID no longer runs; one
    without a process id (older versions) when it is untouched for :data:`STALE_SECONDS`.
    Returns the removed paths.
    """
    prefix = f".{target.name}."
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith((".tmp", ".old"))) or not entry.is_dir():
            continue
        head = name[len(prefix):].split(".", 1)[0]
        if head.isdigit() and len(name[len(prefix):].split(".")) > 2:
            stale = int(head) != os.getpid() and not _pid_alive(int(head))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > STALE_SECONDS
            except FileNotFoundError:  # another writer finished with it meanwhile
                continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` onto ``target``, replacing what is there whole.

    The new directory gets the mode of the one it replaces (or a plain ``mkdir``'s); the old
    one is moved aside first and deleted after, so ``target`` is always one or the other.
    """
    mode = target.stat().st_mode & 0o7777 if target.is_dir() else 0o777 & ~_umask()
    os.chmod(tmp, mode)
    if not target.exists():
        os.replace(tmp, target)
        return
    old = temp_sibling(target, ".old")
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` whole.

    An exception or Ctrl-C inside the block removes the temporary directory and leaves
    ``target`` as it was; stale leftovers of killed writers are removed first. Callers decide
    beforehand whether an existing ``target`` may be replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(target)
    tmp = temp_sibling(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
