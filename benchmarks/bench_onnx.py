"""ONNX Runtime vs PyTorch embedding latency on CPU for the tiny presets (one thread).

    python benchmarks/bench_onnx.py                                   # 10 s and 120 s, all three
    python benchmarks/bench_onnx.py --seconds 10 --presets msm_vit_tiny --out /tmp/bench_onnx

For each preset a randomly initialised checkpoint is written, exported with ``audiofm export``
(front end included), and both embedders embed the same random audio of each length the way
users call them: ``audiofm.load(ckpt).embed(wave, 16000)`` (PyTorch, inference mode) and
``OnnxEmbedder(model.onnx).embed(wave, 16000)`` (ONNX Runtime, CPU provider) — both chunk at the
4 s training segment and batch the chunks (16 per call), so a 120 s clip is 30 chunks. Both run
on one thread (``torch.set_num_threads(1)``; ORT ``intra_op_num_threads=1``), in the same
process, alternating PyTorch and ONNX per repeat so machine load hits both alike; the table
shows the minimum of ``--repeats`` wall times and the ratio ONNX / PyTorch (< 1: ONNX faster),
and the max |Δ| between the two embeddings (frames and clip). Writes ``onnx.json`` and
``onnx.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

PRESETS = ["msm_vit_tiny", "msm_mamba_tiny", "msm_xlstm_tiny"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=PRESETS)
    p.add_argument("--seconds", nargs="+", type=float, default=[10.0, 120.0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench_onnx"))
    args = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch

    import audiofm
    from audiofm.checkpoint import CheckpointSpec, save_checkpoint
    from audiofm.export import OnnxEmbedder
    from audiofm.export.onnx import export_onnx
    from audiofm.models.registry import build_model, model_config

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.presets:
        cfg = model_config(preset)
        torch.manual_seed(0)
        ckpt = save_checkpoint(args.out / preset, CheckpointSpec.from_model_config(cfg), build_model(cfg),
                               overwrite=True)
        t0 = time.perf_counter()
        onnx_file = export_onnx(ckpt, args.out / f"{preset}.onnx")[-1]
        export_s = time.perf_counter() - t0
        ref = audiofm.load(ckpt, device="cpu")
        onnx_emb = OnnxEmbedder(onnx_file, threads=1)
        rng = np.random.default_rng(0)
        for seconds in args.seconds:
            wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
            a, b = ref.embed(wave[:16000], 16000), onnx_emb.embed(wave[:16000], 16000)  # warm-up
            times: dict[str, list[float]] = {"torch": [], "onnx": []}
            for _ in range(args.repeats):
                t = time.perf_counter()
                a = ref.embed(wave, 16000)
                times["torch"].append(time.perf_counter() - t)
                t = time.perf_counter()
                b = onnx_emb.embed(wave, 16000)
                times["onnx"].append(time.perf_counter() - t)
            diff = max(float(np.abs(a.frames - b.frames).max()), float(np.abs(a.clip - b.clip).max()))
            row = {"preset": preset, "seconds": seconds, "torch_s": min(times["torch"]), "onnx_s": min(times["onnx"]),
                   "ratio": min(times["onnx"]) / min(times["torch"]), "max_abs_diff": diff,
                   "frames": int(a.frames.shape[0]), "export_s": export_s, "times": times}
            rows.append(row)
            print(f"{preset} {seconds:g}s: torch {row['torch_s']:.3f}s onnx {row['onnx_s']:.3f}s "
                  f"ratio {row['ratio']:.2f} |Δ| {diff:.1e}", file=sys.stderr)
    import onnxruntime

    info = {"command": " ".join(["python", *sys.argv]), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "rows": rows}
    (args.out / "onnx.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = ["| preset | audio | PyTorch (s) | ONNX Runtime (s) | ONNX / PyTorch | max abs diff |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['seconds']:g} s | {r['torch_s']:.3f} | {r['onnx_s']:.3f} | {r['ratio']:.2f} "
              f"| {r['max_abs_diff']:.1e} |" for r in rows]
    (args.out / "onnx.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
