"""Pieces shared by the backbone benchmarks (bench_backbone_scaling, bench_mamba2, bench_xlstm):
clip length ↔ tokens ↔ samples with the default front end, parameter counts, interleaved
repeated timing, and the whole-encoder embedding comparison. Imported by those scripts as a
sibling module (``python benchmarks/bench_*.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def tokens_for(seconds: float) -> int:
    """Token count of a clip with the default front end (10 ms hop, 128 mels, 16×16 patches)."""
    return 8 * int(seconds * 100 // 16)


def samples_for(tokens: int) -> int:
    """Audio samples (16 kHz) whose log-mel gives exactly ``tokens // 8`` whole time patches."""
    return (tokens // 8 * 16 - 1) * 160 + 512


def n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: Callable[[str], None] | None = None,
                budget: float = float("inf"), rotate: bool = False) -> dict[str, dict[str, Any]]:
    """Wall and process CPU times of each ``fns[label]()``, repeats interleaved across labels
    (``rotate``: the starting label rotates each round); ``warmup(label)`` once per label first;
    no further round once a round took more than ``budget`` seconds. Per label: best, median and
    all wall times, best, median and all CPU times."""
    if warmup is not None:
        for label in fns:
            warmup(label)
    labels = list(fns)
    times: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(repeats):
        t_round = time.perf_counter()
        shift = r % len(labels) if rotate else 0
        for label in labels[shift:] + labels[:shift]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[label]()
            times[label].append(time.perf_counter() - t0)
            cpu[label].append(time.process_time() - c0)
        if time.perf_counter() - t_round > budget:
            break
    return {label: {"best": min(t), "median": statistics.median(t), "all": t, "cpu_best": min(cpu[label]),
                    "cpu_median": statistics.median(cpu[label]), "cpu_all": cpu[label]}
            for label, t in times.items()}


def bench_encoders(presets: tuple[str, ...], seconds: list[float], repeats: int, budget: float,
                   stat: str = "best", rotate: bool = False) -> dict[str, Any]:
    """Whole tiny encoders (registry ``presets``, seed 0) embedding one pass of random audio of
    each length in ``seconds``, batch 1, inference mode, timed by :func:`interleaved`; prints
    each length's ``stat`` ('best' or 'median') as it goes."""
    import torch

    from audiofm.models.encoder import AudioEncoder
    from audiofm.models.registry import model_config

    encoders = {}
    for name in presets:
        torch.manual_seed(0)
        encoders[name] = AudioEncoder(model_config(name).encoder).eval()
    with torch.inference_mode():
        for enc in encoders.values():
            enc.frame_embeddings(0.1 * torch.randn(1, samples_for(2048)))
    out: dict[str, Any] = {"params": {k: n_params(e) for k, e in encoders.items()}, "lengths": {}}
    for s in seconds:
        wave = 0.1 * torch.randn(1, samples_for(tokens_for(s)))

        def run(enc: AudioEncoder, wave: torch.Tensor = wave) -> Callable[[], None]:
            def go() -> None:
                with torch.inference_mode():
                    enc.frame_embeddings(wave)
            return go

        res = interleaved({k: run(e) for k, e in encoders.items()}, repeats, budget=budget, rotate=rotate)
        out["lengths"][str(s)] = {"tokens": tokens_for(s), **res}
        print(f"  encoders {s:g} s: " + ", ".join(f"{k} {v[stat]:.3f} s" for k, v in res.items()), flush=True)
    return out
