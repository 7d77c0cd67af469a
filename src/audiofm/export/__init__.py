"""Export audiofm encoders out of Python: ONNX graphs (:mod:`.onnx`, needs torch + the export
extra) and :class:`~.embedder.OnnxEmbedder`, which runs them with numpy, soundfile, soxr and
onnxruntime only (no torch). See docs/export.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embedder import OnnxEmbedder


def __getattr__(name: str) -> Any:  # lazy: importing audiofm.export never imports torch
    if name == "OnnxEmbedder":
        from .embedder import OnnxEmbedder

        return OnnxEmbedder
    if name == "export_onnx":
        from .onnx import export_onnx

        return export_onnx
    raise AttributeError(name)


__all__ = ["OnnxEmbedder", "export_onnx"]
