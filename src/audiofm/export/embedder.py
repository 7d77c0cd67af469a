"""``OnnxEmbedder``: embeddings from an exported graph with numpy, soundfile, soxr and onnxruntime
only — this module never imports torch.

It reproduces :class:`audiofm.api.Embedder` (``audiofm.load(ckpt).embed``): input prepared the
same way (mono, resampled with soxr, PCM scaled), long audio cut into the same chunks (whole time
patches, overlapping by ``n_fft - hop`` samples, so the stitched frames are those of the whole
signal), chunks of several inputs batched longest first, clip = the pooling named in the graph's
metadata over all frames, timestamps = time-patch centres. Tested equal to the PyTorch embedder
within 1e-4 (frames and clip) on real task audio.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import prepare
from ..embedding import Embeddings, chunk_plan, chunk_starts, patch_timestamps, pool_frames_np

META_KEY = "audiofm"
META_FORMAT = "audiofm-onnx"
_AUTO = "auto"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("OnnxEmbedder needs onnxruntime: pip install 'audiofm[export]' "
                          "(or pip install onnxruntime)") from e
    return onnxruntime


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The audiofm metadata (JSON in ``metadata_props['audiofm']``) of an exported graph."""
    ort = _ort()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ONNX file")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    return _metadata(sess, p)


def _metadata(sess: Any, p: Path) -> dict[str, Any]:
    props = sess.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ValueError(f"{p}: not an audiofm ONNX export (no '{META_KEY}' metadata); export it with "
                         "`audiofm export CKPT --format onnx`")
    meta: dict[str, Any] = json.loads(props[META_KEY])
    if meta.get("format") != META_FORMAT:
        raise ValueError(f"{p}: metadata format {meta.get('format')!r} is not {META_FORMAT!r}")
    return meta


class OnnxEmbedder:
    """An ``AudioEmbedder`` over an ONNX graph written by ``audiofm export``.

    path: the ``.onnx`` file (its front-end graph, if exported separately, is found beside it).
    chunk_seconds: "auto" = the checkpoint's training segment (as ``audiofm.load``), None = one
    pass over the whole input. batch_size: chunks per graph call. threads: ONNX Runtime intra-op
    threads (None = its default). name: label (default: the file's stem).
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_seconds: float | str | None = _AUTO,
                 batch_size: int = 16, threads: int | None = None, name: str | None = None) -> None:
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        self.meta = meta = _metadata(self._session, self.path)
        self._frontend = None
        if meta.get("frontend") == "separate":
            fe_path = self.path.with_name(str(meta["frontend_file"]))
            if not fe_path.is_file():
                raise FileNotFoundError(f"{fe_path}: the front-end graph of {self.path.name} is missing")
            self._frontend = ort.InferenceSession(str(fe_path), opts, providers=providers)
        self.name = name or self.path.stem
        self.sample_rate = int(meta["sample_rate"])
        self.frame_dim = int(meta["frame_dim"])
        self.embed_dim = int(meta["embed_dim"])
        self.pooling = str(meta["pooling"])
        self.layer = int(meta["layer"])
        self.weights_id = str(meta["weights_id"])
        self.segment_seconds = float(meta["segment_seconds"])
        self.batch_size = int(batch_size)
        self._patch_t, self._hop, self._fft = int(meta["patch_t"]), int(meta["hop_length"]), int(meta["fft_size"])
        self.patch_seconds = self._patch_t * self._hop / self.sample_rate
        if chunk_seconds == _AUTO:
            chunk_seconds = self.segment_seconds
        self.chunk_seconds: float | None = None if chunk_seconds in (None, 0) else float(chunk_seconds)
        if self.chunk_seconds is not None:
            self._chunk_len, self._chunk_hop = chunk_plan(self.chunk_seconds, self._patch_t, self._hop, self._fft,
                                                          self.sample_rate)

    # -- AudioEmbedder --------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A cache key: the weights id, the encoder config and embedding settings (the same
        settings as the PyTorch embedder's key, plus the runtime, so caches are kept apart)."""
        spec = {"weights": self.weights_id, "layer": self.layer, "pooling": self.pooling,
                "chunk": self.chunk_seconds, "encoder": self.meta.get("encoder"), "runtime": "onnx"}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def embed(self, wave: np.ndarray, sr: int) -> Embeddings:
        """Embeddings of one mono (or multi-channel) waveform at rate ``sr``."""
        return self.embed_batch([wave], sr)[0]

    def embed_batch(self, waves: list[np.ndarray], sr: int) -> list[Embeddings]:
        prepared = [prepare(w, sr, self.sample_rate, name=f"input {i}") for i, w in enumerate(waves)]
        chunks: list[tuple[int, int, np.ndarray]] = []  # (clip, index, samples)
        for i, w in enumerate(prepared):
            starts = [0] if self.chunk_seconds is None else chunk_starts(len(w), self._chunk_len, self._chunk_hop)
            end = len(w) if self.chunk_seconds is None else self._chunk_len
            chunks.extend((i, j, w[s : s + end]) for j, s in enumerate(starts))
        order = sorted(range(len(chunks)), key=lambda j: -len(chunks[j][2]))  # longest first: less padding
        frames: dict[tuple[int, int], np.ndarray] = {}
        for s in range(0, len(order), self.batch_size):
            group = [chunks[j] for j in order[s : s + self.batch_size]]
            for (clip, index, _), f in zip(group, self._encode([c[2] for c in group])):
                frames[(clip, index)] = f
        out = []
        for i in range(len(prepared)):
            n = sum(1 for c in chunks if c[0] == i)
            fr = np.concatenate([frames[(i, j)] for j in range(n)], axis=0)
            out.append(Embeddings(pool_frames_np(fr, self.pooling), fr, self.timestamps(fr.shape[0])))
        return out

    # -- helpers --------------------------------------------------------------------------
    def timestamps(self, n: int, start: int = 0) -> np.ndarray:
        """Centre (seconds) of time patches start..start+n-1 (the metadata's "patch_centre")."""
        return patch_timestamps(n, self._patch_t, self._hop, self._fft, self.sample_rate, start)

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph on a right-padded batch ``wave (B, S)`` float32 with ``lengths (B,)``:
        ``frames (B, Tp, D)``, ``num_frames (B,)``, ``clip (B, C)``."""
        feed = {"wave": np.ascontiguousarray(wave, dtype=np.float32), "lengths": lengths.astype(np.int64)}
        if self._frontend is not None:
            logmel, frame_lengths = self._frontend.run(None, feed)
            feed = {"logmel": logmel, "frame_lengths": frame_lengths}
        frames, num_frames, clip = self._session.run(None, feed)
        return frames, num_frames, clip

    def _encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.zeros((len(waves), max(len(w) for w in waves)), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        frames, counts, _ = self.run(batch, np.asarray([len(w) for w in waves], dtype=np.int64))
        return [frames[i, : int(c)] for i, c in enumerate(counts)]

    def __repr__(self) -> str:
        return (f"OnnxEmbedder({self.name!r}, dim={self.embed_dim}, rate={self.sample_rate}, layer={self.layer}, "
                f"pooling={self.pooling!r}, chunk_seconds={self.chunk_seconds})")
