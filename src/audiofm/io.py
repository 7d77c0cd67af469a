"""Atomic file writes: a file (or directory) that exists under its final name is complete.

Everything audiofm writes goes through these helpers: the content goes to a hidden temporary
sibling, which is renamed over the final name only when complete; on any failure the
temporary is removed and an existing file is left as it was.

A write that fails because the disk is full, the file system is read-only or permission is
denied raises :class:`WriteError`, one line naming the path and the cause (whatever library
failed: numpy and the csv module raise ``OSError``, safetensors its own error, ``torch.save`` a
``RuntimeError``). :func:`check_writable` finds the same problems before long work starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: causes of failed writes, in words, by errno
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_OS_ERROR = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors) report an errno
_TORCH_WRITER = ("unexpected pos", "PytorchStreamWriter", "file write failed")  # torch.save on a full disk
_LOW_SPACE = 64 << 20


class WriteError(OSError):
    """An output could not be written (disk full, read-only, no permission); ``str()`` is one
    line naming the path and the cause."""

    def __init__(self, path: str | os.PathLike[str], cause: str, code: int | None = None,
                 unchanged: bool = True) -> None:
        super().__init__(code, cause, str(path))
        self.unchanged = unchanged

    def __str__(self) -> str:
        tail = " (nothing was changed there)" if self.unchanged else ""
        return f"{self.filename}: cannot write: {self.strerror}{tail}"


def write_error(path: str | os.PathLike[str], e: BaseException) -> WriteError | None:
    """``e`` (raised while writing ``path``) as a :class:`WriteError` when it is a disk-full,
    read-only or permission failure; None for any other error."""
    if isinstance(e, WriteError):
        return e
    code = e.errno if isinstance(e, OSError) else None
    if code is None and not isinstance(e, (KeyboardInterrupt, SystemExit)):
        m = _OS_ERROR.search(str(e))
        code = int(m.group(1)) if m else None
    if code in CAUSES:
        return WriteError(path, CAUSES[code], code)
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITER):
        free = _free_bytes(Path(path).parent)
        if free is not None and free < _LOW_SPACE:
            return WriteError(path, CAUSES[errno.ENOSPC], errno.ENOSPC)
        return WriteError(path, f"the write failed ({' '.join(str(e).split())})")
    return None


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(folder)).free
    except OSError:
        return None


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Re-raise write failures under ``path`` as :class:`WriteError`."""
    try:
        yield
    except Exception as e:
        err = write_error(path, e)
        if err is None or err is e:
            raise
        raise err from e


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success it replaces
    ``path``, on failure it is deleted (write failures raise :class:`WriteError`)."""
    dest = Path(path)
    with _translated(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (non-JSON values via ``str``) atomically."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` to fill; on success it becomes ``path``
    (replacing an existing one only with ``overwrite``), on failure it is deleted (write
    failures raise :class:`WriteError`)."""
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: already exists; choose another path (nothing was overwritten)")
    with _translated(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if dest.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
                os.replace(dest, old / dest.name)
                os.replace(tmp, dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_writable(path: str | os.PathLike[str], need_bytes: int = 0) -> None:
    """Raise :class:`WriteError` unless ``path`` (a file or directory, existing or to be created)
    can be written: a probe file is created and removed in its folder (or the nearest existing
    ancestor), and with ``need_bytes`` the free space is compared. Call it before long work."""
    dest = Path(path)
    folder = _existing(dest if dest.is_dir() else dest.parent)
    if not folder.is_dir():
        raise WriteError(dest, f"{folder} is not a directory", errno.ENOTDIR)
    try:
        fd, probe = tempfile.mkstemp(prefix=".audiofm-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        err = write_error(dest, e)
        raise (err or WriteError(dest, e.strerror or str(e), e.errno)) from e
    free = _free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise WriteError(dest, f"{CAUSES[errno.ENOSPC]} (needs about {_mb(need_bytes)}, {_mb(free)} free)",
                         errno.ENOSPC)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{max(1, round(n / 1024))} KB"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
