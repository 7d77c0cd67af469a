"""Export a checkpoint's encoder to ONNX (``audiofm export CKPT --format onnx --out model.onnx``).

The encoder is rebuilt from the checkpoint's ``encoder`` component with the exportable layers
(:mod:`audiofm.models.layer_config`) and traced by ``torch.onnx.export`` (``torch.export``,
dynamic batch and length). Graphs:

* ``frontend="included"`` (default): one graph ``wave (B, S) float32, lengths (B,) int64 →
  frames (B, Tp, D), num_frames (B,) int64, clip (B, C)``;
* ``frontend="separate"``: ``<out>.frontend.onnx`` (``wave, lengths → logmel (B, n_mels, T),
  frame_lengths (B,)``, the normalised log-mel) and ``<out>`` (``logmel, frame_lengths → frames,
  num_frames, clip``), so the spectrogram can be computed elsewhere.

``wave`` is right-padded mono audio at the model's rate and ``lengths`` the valid samples per row;
``frames[b, :num_frames[b]]`` are row b's frame embeddings (one per time patch) and ``clip`` their
pooling. The graph's metadata (``metadata_props["audiofm"]``, JSON; :func:`read_metadata`) holds
what an embedder needs: rates, hop, FFT size, patch sizes, pooling, layer, the default chunk,
the timestamp rule and the checkpoint's weights id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from .. import checkpoint as ckpt
from ..config import to_dict
from ..embedding import POOLINGS, pooled_dim
from ..io import atomic_path
from ..models.encoder import AudioEncoder, pool_frames

META_KEY = "audiofm"
META_FORMAT = "audiofm-onnx"
META_VERSION = 1
FRONTENDS = ("included", "separate")


class _Full(nn.Module):
    """wave, lengths → frames, num_frames, clip."""

    def __init__(self, encoder: AudioEncoder, layer: int, pooling: str) -> None:
        super().__init__()
        self.encoder, self.layer, self.pooling = encoder, layer, pooling

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tok = self.encoder.tokenize(wave, lengths)
        frames, valid = self.encoder.frame_embeddings_from_tokens(tok, self.layer)
        return frames, tok.time_lengths, pool_frames(frames, valid, self.pooling)


class _Frontend(nn.Module):
    """wave, lengths → normalised log-mel, frame_lengths."""

    def __init__(self, encoder: AudioEncoder) -> None:
        super().__init__()
        self.frontend = encoder.frontend

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        spec = self.frontend(wave)  # (B, F, T)
        return spec, self.frontend.frame_lengths(lengths).clamp(max=spec.shape[-1])


class _Encoder(_Full):
    """logmel, frame_lengths → frames, num_frames, clip."""

    def forward(self, logmel: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tok = self.encoder.tokenize_spec(logmel, frame_lengths)
        frames, valid = self.encoder.frame_embeddings_from_tokens(tok, self.layer)
        return frames, tok.time_lengths, pool_frames(frames, valid, self.pooling)


def build_exportable(path: str | os.PathLike[str]) -> tuple[AudioEncoder, ckpt.CheckpointSpec]:
    """The checkpoint's encoder built with the exportable layers, its weights loaded (strict)."""
    d = ckpt.resolve(path)
    spec = ckpt.load_spec(d)
    if spec.kind == "dual":
        raise ckpt.CheckpointError(f"{d}: an audio–text ('dual') checkpoint; ONNX export takes an audio encoder "
                                   "checkpoint (msm, encoder or classifier), not a dual encoder")
    encoder = AudioEncoder(spec.encoder, exportable=True)
    ckpt.load_weights(encoder, ckpt.component(ckpt.load_state_dict(d), "encoder", str(d)), str(d))
    return encoder.eval(), spec


def metadata(spec: ckpt.CheckpointSpec, weights_id: str, *, name: str, layer: int, pooling: str, frontend: str,
             frontend_file: str | None) -> dict[str, Any]:
    """What the embedder of an exported graph needs (stored as JSON in its metadata)."""
    cfg = spec.encoder
    fe = cfg.frontend
    return {
        "format": META_FORMAT, "format_version": META_VERSION, "audiofm_version": __version__,
        "name": name, "weights_id": weights_id, "backbone": cfg.backbone,
        "sample_rate": fe.sample_rate, "hop_length": fe.hop_length, "fft_size": fe.fft_size,
        "win_length": fe.win_length, "n_mels": fe.n_mels, "patch_t": cfg.patch_t, "patch_f": cfg.patch_f,
        "frame_dim": cfg.dim, "embed_dim": pooled_dim(cfg.dim, pooling),
        "pooling": pooling, "layer": layer, "segment_seconds": spec.segment_seconds,
        "frontend": frontend, "frontend_file": frontend_file,
        # frame k (time patch k) covers frames [k·patch_t, (k+1)·patch_t); its timestamp is the
        # mean of their centres: ((k·patch_t + (patch_t-1)/2)·hop + fft/2) / sample_rate seconds
        "timestamps": "patch_centre",
        "chunk_overlap_samples": fe.fft_size - fe.hop_length,
        "encoder": to_dict(cfg),
    }


def _export(module: nn.Module, args: tuple[Tensor, ...], input_names: list[str], output_names: list[str],
            dynamic: dict[str, dict[int, Any]], meta: dict[str, Any], out: Path, opset: int | None) -> None:
    import onnx

    module.eval()
    prog = torch.onnx.export(module, args, input_names=input_names, output_names=output_names,
                             dynamic_shapes=dynamic, dynamo=True, opset_version=opset, external_data=False,
                             verbose=False)
    assert prog is not None
    model = prog.model_proto
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta, sort_keys=True, default=str)
    model.producer_name = "audiofm"
    with atomic_path(out) as tmp:
        onnx.save_model(model, str(tmp))


def export_onnx(path: str | os.PathLike[str], out: str | os.PathLike[str], *, frontend: str = "included",
                layer: int = -1, pooling: str = "mean", opset: int | None = None) -> list[Path]:
    """Export the checkpoint (or run directory) ``path`` to ONNX at ``out``; returns the files
    written (with ``frontend="separate"`` the front-end graph first). See the module doc."""
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs the export extra: pip install 'audiofm[export]'") from e
    encoder, spec = build_exportable(path)
    depth = encoder.backbone.depth
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer} out of range for a {depth}-block encoder")
    out = Path(out)
    fe_file = out.with_name(out.stem + ".frontend.onnx") if frontend == "separate" else None
    meta = metadata(spec, ckpt.weights_id(ckpt.resolve(path)), name=Path(str(path).rstrip("/")).name or str(path),
                    layer=layer, pooling=pooling, frontend=frontend,
                    frontend_file=fe_file.name if fe_file is not None else None)
    fe = spec.encoder.frontend
    batch, samples, frames_dim = torch.export.Dim("batch"), torch.export.Dim("samples"), torch.export.Dim("frames")
    # example inputs: two rows of unequal length (the padding path is traced), a few patches long
    n = fe.fft_size + 40 * spec.encoder.patch_t * fe.hop_length
    wave = torch.randn(2, n) * 0.1
    lengths = torch.tensor([n, n // 2], dtype=torch.long)
    outs = ["frames", "num_frames", "clip"]
    written = []
    with torch.no_grad():
        if fe_file is None:
            _export(_Full(encoder, layer, pooling), (wave, lengths), ["wave", "lengths"], outs,
                    {"wave": {0: batch, 1: samples}, "lengths": {0: batch}}, meta, out, opset)
        else:
            front = _Frontend(encoder)
            _export(front, (wave, lengths), ["wave", "lengths"], ["logmel", "frame_lengths"],
                    {"wave": {0: batch, 1: samples}, "lengths": {0: batch}}, {**meta, "graph": "frontend"},
                    fe_file, opset)
            written.append(fe_file)
            spec_in, frame_len = front(wave, lengths)
            _export(_Encoder(encoder, layer, pooling), (spec_in, frame_len), ["logmel", "frame_lengths"], outs,
                    {"logmel": {0: batch, 2: frames_dim}, "frame_lengths": {0: batch}}, meta, out, opset)
    written.append(out)
    return written


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The audiofm metadata of an exported graph (see :func:`metadata`); torch-free."""
    from .embedder import read_metadata as _read

    return _read(path)


#: float32 agreement of an exported graph with ``audiofm.load(ckpt)`` (frames and clip, max |Δ|)
TOLERANCE = 1e-4


def check_export(path: str | os.PathLike[str], onnx_path: str | os.PathLike[str], seconds: tuple[float, ...] = (
        0.5, 2.3), tolerance: float = TOLERANCE) -> float:
    """Max |Δ| between the exported graph (via :class:`~.embedder.OnnxEmbedder`) and the PyTorch
    embedder of the checkpoint on random audio of ``seconds``; raises when above ``tolerance``."""
    import numpy as np

    from ..api import load
    from .embedder import OnnxEmbedder

    onnx_emb = OnnxEmbedder(onnx_path)
    ref = load(path, layer=onnx_emb.layer, pooling=onnx_emb.pooling, device="cpu")
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(int(s * ref.sample_rate))).astype(np.float32) for s in seconds]
    err = 0.0
    for a, b in zip(onnx_emb.embed_batch(waves, ref.sample_rate), ref.embed_batch(waves, ref.sample_rate)):
        if a.frames.shape != b.frames.shape:
            raise RuntimeError(f"{onnx_path}: ONNX gives {a.frames.shape} frames, PyTorch {b.frames.shape}")
        err = max(err, float(np.abs(a.frames - b.frames).max()), float(np.abs(a.clip - b.clip).max()))
    if err > tolerance:
        raise RuntimeError(f"{onnx_path}: ONNX Runtime differs from PyTorch by {err:.2e} > {tolerance:g}")
    return err
