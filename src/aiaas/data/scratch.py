"""Private scratch directories for parsing and conversion, and the sweep of dead ones.

Invariants:

- a work directory lives under ``DATA_DIR/tmp/ingest/<id>/`` and comes with
  ``<id>.lock``, which its process keeps ``flock()``ed until :func:`remove_work_dir`; the
  kernel drops the lock when the process dies (even by SIGKILL), so :func:`sweep_scratch`
  tells a dead owner's directory from a live one without guessing by age;
- the lock sits beside the directory, out of reach of the sandboxed child (Landlock
  confines it to the directory itself);
- every caller removes its directory on every path (:func:`work_dir` does it for you).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from aiaas.settings import Settings

log = structlog.get_logger()

_WORK_LOCKS: dict[str, int] = {}  # work dir → the open, flock()ed fd of its lock file
_WORK_LOCKS_GUARD = threading.Lock()


def scratch_root(settings: Settings) -> Path:
    return settings.data_dir / "tmp" / "ingest"


def new_work_dir(settings: Settings) -> Path:
    """A fresh private scratch directory; the caller removes it (:func:`remove_work_dir`)."""
    root = scratch_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        name = uuid.uuid4().hex
        fd = _new_locked_file(root, f"{name}.lock")
        if fd is None:  # a sweep removed the lock before it was ours: try another name
            continue
        path = root / name
        path.mkdir(mode=0o700)
        with _WORK_LOCKS_GUARD:
            _WORK_LOCKS[str(path)] = fd
        return path


def _new_locked_file(root: Path, name: str) -> int | None:
    """Create ``root/name`` already locked: it is made and locked under a temporary name
    first, then renamed, so a sweep never sees the final name unlocked."""
    tmp = root / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, root / name)
    except FileNotFoundError:  # swept between create and lock (taken for a dead one's)
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return fd


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _WORK_LOCKS_GUARD:
        fd = _WORK_LOCKS.pop(str(path), None)
    if fd is not None:
        path.with_name(f"{path.name}.lock").unlink(missing_ok=True)  # still ours: then release
        os.close(fd)


@contextmanager
def work_dir(settings: Settings) -> Iterator[Path]:
    """A private scratch directory, removed whatever happens."""
    path = new_work_dir(settings)
    try:
        yield path
    finally:
        remove_work_dir(path)


@contextmanager
def _dead_owner(lock: Path) -> Iterator[bool | None]:
    """Whether the process that locked ``lock`` is gone (True), alive (False), or there is
    no lock to tell by (None). Holds the lock meanwhile, so nobody can take it over."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError:  # not ours to judge (a symlink, no permission)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:  # a filesystem without flock(): fall back to the age rule
            yield None
            return
        yield True
    finally:
        os.close(fd)


def older_than(path: Path, cutoff: float) -> bool:
    """Whether ``path`` (not followed) was last modified before ``cutoff`` (epoch seconds)."""
    try:
        return path.lstat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_scratch(settings: Settings, *, older_than_s: float = 3600.0) -> int:
    """Remove scratch left by dead processes; returns how many directories and files.

    A work directory whose lock file (see :func:`new_work_dir`) can be locked belongs to a
    process that is gone: it is removed whatever its age — a partial upload, a conversion's
    spill files, a half-written Parquet file. Entries without a lock file (left by an
    older aiaas, or on a filesystem without ``flock``), leftover lock files and the download
    cache's partial files are removed once untouched for ``older_than_s``. Safe to run at
    any time, from any process sharing the data directory.
    """
    cutoff = time.time() - older_than_s
    root = scratch_root(settings)
    entries = sorted(root.iterdir()) if root.exists() else []
    removed = _sweep_work_dirs(entries, cutoff)
    _sweep_lock_files(entries, cutoff)
    return removed + _sweep_partial_downloads(settings.data_dir / "cache", cutoff)


def _sweep_work_dirs(entries: list[Path], cutoff: float) -> int:
    removed = 0
    for entry in entries:
        if entry.name.endswith(".lock") or entry.name.startswith("."):
            continue  # lock files: judged with their directory, then on their own below
        lock = entry.with_name(f"{entry.name}.lock")
        with _dead_owner(lock) as dead:
            if dead is False or (dead is None and not older_than(entry, cutoff)):
                continue
            _remove(entry)
            if dead:
                lock.unlink(missing_ok=True)
            removed += 1
            log.info("scratch_removed", path=entry.name, owner="dead" if dead else "unknown")
    return removed


def _sweep_lock_files(entries: list[Path], cutoff: float) -> None:
    """Lock files whose directory is gone (a crash in between)."""
    for entry in entries:
        if not (entry.name.endswith(".lock") or entry.name.startswith(".")):
            continue
        if entry.name.endswith(".lock") and entry.with_name(entry.name[:-5]).exists():
            continue
        with _dead_owner(entry) as dead:
            if dead or (dead is None and older_than(entry, cutoff)):
                entry.unlink(missing_ok=True)


def _sweep_partial_downloads(cache: Path, cutoff: float) -> int:
    """Partial downloads of remote versions (see ``versions.local_parquet``)."""
    removed = 0
    if cache.exists():
        for tmp in cache.rglob("*.tmp-*"):
            if tmp.is_file() and older_than(tmp, cutoff):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed
