"""Probe fits in worker processes, beside the embedding of the next task.

A fit depends only on its inputs (the round's arrays, the probe settings, the seed) and its thread
count, so running it in another process gives the same numbers, bit for bit, as running it here
(tests/test_eval_jobs.py). :class:`ProbePool` hands fits to ``jobs`` spawned workers as soon as a
task's embeddings are ready, so probing overlaps the embedding of the tasks after it; results come
back in submission order, so ``results.csv`` rows keep the order of a one-process run.
``jobs=1`` runs every fit at once in this process (no pool).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from .probes import ProbeConfig, ProbeData, ProbeResult, run_probe


def _worker_init() -> None:
    from .threads import warm_imports

    warm_imports()


def _fit(probe: str, data: ProbeData, cfg: ProbeConfig, seed: int, threads: int | None) -> ProbeResult:
    return run_probe(probe, data, cfg, seed=seed, threads=threads)


class ProbePool:
    """Submit probe fits; :meth:`results` returns them in submission order with their tags.

    ``on_done``: called (in this process) once per finished fit, e.g. to advance a progress bar.
    """

    def __init__(self, jobs: int, cfg: ProbeConfig, threads: int | None,
                 on_done: Callable[[], object] | None = None) -> None:
        self.cfg, self.threads, self.on_done = cfg, threads, on_done
        self._executor: ProcessPoolExecutor | None = None
        if jobs > 1:  # spawn: a forked child of a process that already ran torch threads can hang
            self._executor = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_worker_init)
        self._pending: list[tuple[Any, Future[ProbeResult] | ProbeResult]] = []

    def submit(self, tag: Any, probe: str, data: ProbeData, seed: int) -> None:
        """Fit ``probe`` on ``data`` with ``seed``; ``tag`` comes back with the result."""
        if self._executor is None:
            res = _fit(probe, data, self.cfg, seed, self.threads)
            self._pending.append((tag, res))
            if self.on_done:
                self.on_done()
            return
        fut = self._executor.submit(_fit, probe, data, self.cfg, seed, self.threads)
        if self.on_done:
            done = self.on_done
            fut.add_done_callback(lambda _f: done())
        self._pending.append((tag, fut))

    def results(self, progress: bool = False) -> list[tuple[Any, ProbeResult]]:
        """Wait for every fit submitted so far; (tag, result) pairs in submission order
        (``progress``: a bar over the fits still running)."""
        from tqdm.auto import tqdm

        pending, self._pending = self._pending, []
        running = [r for _, r in pending if isinstance(r, Future) and not r.done()]
        with tqdm(total=len(pending), initial=len(pending) - len(running), desc="probe fits", unit="fit",
                  disable=not progress or not running, dynamic_ncols=True) as bar:
            for fut in running:
                fut.result()
                bar.update(1)
        return [(tag, r if isinstance(r, ProbeResult) else r.result()) for tag, r in pending]

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None

    def __enter__(self) -> ProbePool:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(cancel=exc_type is not None)
