"""The input path on real files: decode → resample → log-mel, in × real time, 1 and 2 workers.

    OMP_NUM_THREADS=1 python benchmarks/bench_input_path.py ../shared/data/tasks --out /tmp/input_path
    OMP_NUM_THREADS=1 python benchmarks/bench_input_path.py DIR --rates 16000 44100 48000 --formats wav flac

The audio is the real recordings under the given folders (``audiofm.audio.find_audio``), at most
``--max-seconds`` of them (files taken in sorted order). For each source rate in ``--rates`` and
each container in ``--formats`` the files are first re-encoded, outside the timing, into a
temporary folder at that rate (soxr HQ, PCM-16 WAV or FLAC), so that the resampler does the work a
user's 44.1 / 48 kHz files ask of it. Then, per configuration, three stages are timed over all
files, each file through the library's own functions:

- ``decode``: :func:`audiofm.audio.load_audio` at the file's own rate;
- ``+resample``: ``load_audio(path, sr=16000)`` (decode, mono, soxr HQ to the model rate);
- ``+log-mel``: the same, then :class:`audiofm.frontend.LogMel` (default front end) on the clip.

``--workers 1 2``: the file list split over that many processes (each one torch thread); the wall
time excludes starting the processes. Speed = seconds of audio ÷ wall seconds (best of
``--repeats``). Writes ``input_path.json`` and ``input_path.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

STAGES = ("decode", "+resample", "+log-mel")
_FRONTEND: Any = None


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    global _FRONTEND
    from audiofm.frontend import FrontendConfig, LogMel

    _FRONTEND = LogMel(FrontendConfig()).eval()


def _run(stage: str, paths: list[str]) -> float:
    """Process ``paths`` through ``stage``; returns the seconds of audio handled."""
    import torch

    from audiofm.audio import load_audio

    total = 0.0
    with torch.inference_mode():
        for p in paths:
            if stage == "decode":
                wave, sr = load_audio(p)
            else:
                wave, sr = load_audio(p, sr=16000)
                if stage == "+log-mel":
                    _FRONTEND(torch.from_numpy(wave)[None])
            total += wave.size / sr
    return total


def encode_copies(files: list[Path], rate: int, fmt: str, out: Path) -> list[str]:
    """Re-encode ``files`` at ``rate`` as ``fmt`` (PCM-16) into ``out``; their paths."""
    import soundfile as sf

    from audiofm.audio import load_audio

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(files):
        wave, _ = load_audio(f, sr=rate)
        p = out / f"{i:05d}.{fmt}"
        sf.write(p, wave, rate, subtype="PCM_16", format=fmt.upper())
        paths.append(str(p))
    return paths


def time_stage(pool: ProcessPoolExecutor, stage: str, paths: list[str], workers: int) -> tuple[float, float]:
    """(wall seconds, audio seconds) of ``stage`` over ``paths`` split into ``workers`` parts."""
    parts = [paths[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    audio = sum(pool.map(_run, [stage] * workers, parts))
    return time.perf_counter() - t0, audio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", type=Path, help="folders of real audio files")
    ap.add_argument("--max-seconds", type=float, default=1200.0, help="audio to use (default: 1200)")
    ap.add_argument("--rates", type=int, nargs="+", default=[16000, 44100],
                    help="source sample rates to re-encode to (default: 16000 44100)")
    ap.add_argument("--formats", nargs="+", default=["wav", "flac"], choices=["wav", "flac"],
                    help="containers (default: wav flac)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts (default: 1 2)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many (default: 3)")
    ap.add_argument("--out", type=Path, default=Path("runs/input_path"),
                    help="output folder (default: runs/input_path)")
    args = ap.parse_args(argv)

    from audiofm.audio import audio_info, find_audio

    files: list[Path] = []
    seconds = 0.0
    for root in args.roots:
        for f in find_audio(root):
            frames, sr = audio_info(f)
            files.append(f)
            seconds += frames / sr
            if seconds >= args.max_seconds:
                break
        if seconds >= args.max_seconds:
            break
    if not files:
        print(f"no audio files under {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 2
    load0 = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="audiofm-input-") as tmp:
        pools = {w: ProcessPoolExecutor(w, initializer=_init_worker) for w in args.workers}
        try:
            for w, pool in pools.items():  # start the processes (and torch) outside the timing
                list(pool.map(_run, ["decode"] * w, [[]] * w))
            for rate in args.rates:
                for fmt in args.formats:
                    paths = encode_copies(files, rate, fmt, Path(tmp) / f"{rate}-{fmt}")
                    for stage in STAGES:
                        for w, pool in pools.items():
                            best = None
                            for _ in range(args.repeats):
                                wall, audio = time_stage(pool, stage, paths, w)
                                best = wall if best is None else min(best, wall)
                            assert best is not None
                            row = {"rate": rate, "format": fmt, "stage": stage, "workers": w,
                                   "audio_s": round(audio, 2), "wall_s": round(best, 4),
                                   "x_realtime": round(audio / best, 1)}
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                    for p in paths:
                        os.unlink(p)
        finally:
            for pool in pools.values():
                pool.shutdown()
    load1 = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"files": len(files), "audio_s": round(seconds, 1), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "loadavg_start": load0, "loadavg_end": load1, "repeats": args.repeats}
    (args.out / "input_path.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"{len(files)} real files, {seconds:.0f} s of audio; load average {load0:.1f} → {load1:.1f}; "
             f"best of {args.repeats}; × real time", "",
             "| source | stage | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in args.workers) + " |",
             "|---|---|" + "---:|" * len(args.workers)]
    for rate in args.rates:
        for fmt in args.formats:
            for stage in STAGES:
                cells = [next(r for r in rows if (r["rate"], r["format"], r["stage"], r["workers"]) ==
                              (rate, fmt, stage, w))["x_realtime"] for w in args.workers]
                speeds = " | ".join(f"{c:,.0f}" for c in cells)
                lines.append(f"| {rate / 1000:g} kHz {fmt} | {stage} | {speeds} |")
    (args.out / "input_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
