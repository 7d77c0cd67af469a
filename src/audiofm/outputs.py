"""What every writing command checks before it writes: never over an existing output unless
asked (``--overwrite``), never over or into its own inputs; and the lock that keeps two
processes out of one output folder.

* :func:`check_output` is the one overwrite check (``embed``, ``stats``, ``evaluate``,
  ``report``, ``adapt-report``, ``demo``).
* :class:`RunLock` is the one lock: ``DIR/.audiofm.lock``, held with ``fcntl.flock`` (released by
  the operating system when the holder dies, however it dies) and naming its holder (pid, host,
  time, command). A lock left by a process that no longer runs is taken over with a note.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO, Any

LOCK = ".audiofm.lock"


class OutputError(ValueError):
    """An output that must not be written: it exists, it is an input, or another process holds it."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(path: str | os.PathLike[str], *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), folder: bool = False,
                 unfinished: Collection[str] = (), flag: str = "--out") -> Path:
    """Refuse to write output ``path`` (set by ``flag``) before any work starts.

    An output is never one of ``inputs`` (files or folders the command reads), and a ``folder``
    output never lies inside one of them, even with ``overwrite``. A file output must not
    exist; a ``folder`` output must not hold anything but ``unfinished`` entries (names this
    command leaves in an unfinished output and reuses, e.g. an embedding cache) — unless
    ``overwrite``, which lets the command replace its own files in it. Returns ``path``."""
    out = Path(path)
    real = out.resolve()
    for src in inputs:
        s = Path(src).resolve()
        if real == s or (folder and _inside(real, s)):
            where = "is" if real == s else "is inside"
            raise OutputError(f"{flag} {out} {where} the input {src}; a command never writes over or into its "
                              "own inputs (choose another " + flag + ")")
    if not out.exists():
        return out
    if not folder:
        if out.is_dir():
            raise OutputError(f"{flag} {out} is a directory; give a file name")
        if not overwrite:
            raise OutputError(f"{flag} {out} already exists; pass --overwrite to replace it or choose another "
                              f"{flag} (nothing was overwritten)")
        return out
    if not out.is_dir():
        raise OutputError(f"{flag} {out} already exists and is a file; give a directory")
    held = sorted(p.name for p in out.iterdir() if p.name not in unfinished and p.name != LOCK)
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise OutputError(f"{flag} {out} already exists and holds {shown}; pass --overwrite to write into it "
                          f"(replacing files of the same name) or choose another {flag} (nothing was overwritten)")
    return out


def describe_holder(info: dict[str, Any]) -> str:
    cmd = " ".join(str(c) for c in info.get("command") or [])
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('time', '?')}"
            + (f" ({cmd})" if cmd else ""))


class RunLock:
    """The lock of output folder ``folder`` (created if missing): :meth:`acquire` or refuse with
    :class:`OutputError` naming the holder; :meth:`release` removes it. Re-entrant within one
    object (nested acquire/release pairs)."""

    def __init__(self, folder: str | os.PathLike[str], command: list[str] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.command = list(command if command is not None else sys.argv)
        self._f: IO[str] | None = None
        self._depth = 0
        self.note = ""  # set when a stale lock was taken over

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says about its holder (None: no lock file)."""
        try:
            return dict(json.loads(self.path.read_text() or "{}"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        import fcntl

        if self._depth:
            self._depth += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                info = self.holder() or {}
                raise OutputError(f"{self.folder} is in use by {describe_holder(info)}; wait for it to finish "
                                  f"or choose another --out (lock file {self.path})") from None
            try:  # the file we locked may have been removed by its last holder meanwhile
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        f.seek(0)
        old = f.read().strip()
        if old:  # its holder died without releasing (killed, power loss): the OS freed its flock
            try:
                info = dict(json.loads(old))
            except ValueError:
                info = {}
            self.note = f"took over the stale lock of {describe_holder(info)}, which no longer runs"
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}) + "\n")
        f.flush()
        self._f, self._depth = f, 1
        return self

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth or self._f is None:
            return
        self.path.unlink(missing_ok=True)  # while still holding it, so no one locks a removed file
        self._f.close()
        self._f = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
