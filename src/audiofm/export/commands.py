"""``audiofm export``: a checkpoint's encoder as ONNX.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection; :func:`main` runs the
command stand-alone (tests, ``python -m audiofm.export.commands``). Settings resolve through
:func:`audiofm._commands.resolve_config` (defaults < ``--config`` < flags < ``--set``); errors the
user can fix print one line and exit 2 (``AUDIOFM_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._commands import add_config_options, command, config_defaults, resolve_config, standalone_main


@dataclass
class ExportConfig:
    """Settings of ``audiofm export``. format: 'onnx'. frontend: 'included' (one graph from the
    waveform) or 'separate' (a front-end graph ``<out>.frontend.onnx`` beside the encoder graph).
    layer: encoder block whose output the graph returns (-1 = the last, after the final norm).
    pooling: clip pooling of the graph's ``clip`` output and of ``OnnxEmbedder`` ('mean', 'max',
    'meanmax', 'meanstd'). opset: ONNX opset (None = the exporter's default). check: run the graph with ONNX
    Runtime on random audio and compare with PyTorch before finishing. overwrite: replace --out."""

    format: Literal["onnx"] = "onnx"
    frontend: Literal["included", "separate"] = "included"
    layer: int = -1
    pooling: str = "mean"
    opset: int | None = None
    check: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format != "onnx":
            raise ValueError(f"format must be 'onnx', got {self.format!r}")
        if self.frontend not in ("included", "separate"):
            raise ValueError(f"frontend must be 'included' or 'separate', got {self.frontend!r}")


def add_parsers(subparsers: Any) -> None:
    """Register ``export`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint's encoder (ONNX)",
        formatter_class=config_defaults("audiofm.export.commands:ExportConfig"),
        description="Export the encoder of checkpoint CKPT to ONNX (dynamic batch and length; the graph's "
                    "metadata carries rates, hop, patch, pooling, timestamp rule and the weights id), for "
                    "audiofm.export.OnnxEmbedder or any ONNX runtime. Needs the export extra "
                    "(pip install 'audiofm[export]'). Settings: ExportConfig (audiofm.export.commands) — "
                    "defaults < --config < flags < --set. See docs/export.md.")
    p.add_argument("ckpt", help="checkpoint or run directory (required)")
    p.add_argument("--format", metavar="FORMAT", help="export format: onnx (default: {format})")
    p.add_argument("--out", required=True, metavar="FILE", help="output .onnx file (required)")
    p.add_argument("--frontend", choices=["included", "separate"],
                   help="front end inside the graph, or as a separate graph OUT.frontend.onnx (default: {frontend})")
    p.add_argument("--layer", type=int, help="encoder block whose output is exported, -1 = the last "
                   "(default: {layer})")
    p.add_argument("--pooling", choices=["mean", "max", "meanmax", "meanstd"], help="clip pooling (default: {pooling})")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check "
                   "(default: check)")
    add_config_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (default: off)")
    p.set_defaults(func=command("export", cmd_export))


def cmd_export(args: argparse.Namespace) -> int:
    cfg = resolve_config(ExportConfig, args, {
        "format": args.format, "frontend": args.frontend, "layer": args.layer, "pooling": args.pooling,
        "opset": args.opset, "check": False if args.no_check else None, "overwrite": args.overwrite or None})
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out must end in .onnx, got {out}")
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    from .onnx import check_export, export_onnx

    files = export_onnx(args.ckpt, out, frontend=cfg.frontend, layer=cfg.layer, pooling=cfg.pooling,
                        opset=cfg.opset)
    if cfg.check:
        err = check_export(args.ckpt, out)
        print(f"checked: ONNX Runtime vs PyTorch max |Δ| = {err:.2e} (frames and clip)", file=sys.stderr)
    for f in files:
        print(f"wrote {f}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.export.commands export ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
