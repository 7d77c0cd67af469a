"""Caption rewriters: the :class:`TextRewriter` protocol, the offline :class:`LexiconRewriter`
(:func:`~audiofm.retrieval.paraphrase.paraphrase`), and ``local_model_rewriter(path, task)``: a
user-supplied LOCAL transformers model directory (paraphrase with a seq2seq or causal LM, or
back-translation with two translation models), loaded with ``local_files_only`` and the Hugging
Face offline switches set. Nothing downloads; a hub name is refused. The output of a local model
is not fact-checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from .paraphrase import Lexicon, default_lexicon, derive_seed, paraphrase
from .text import EXTRA, TextModelError

REWRITE_TASKS = ("paraphrase", "back-translate")


class TextRewriter(Protocol):
    """Rewrites captions (same order, same meaning); deterministic in ``seed``."""

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]: ...


class LexiconRewriter:
    """The offline default: :func:`paraphrase` with the curated lexicon."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon or default_lexicon()

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]:
        return [paraphrase(c, derive_seed(seed, i), self.lexicon) for i, c in enumerate(captions)]


def _check_generator_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise TextModelError(f"{p}: not a directory; pass the folder of a local transformers model (one written "
                             "by save_pretrained); hub names are never downloaded")
    if not (p / "config.json").is_file():
        raise TextModelError(f"{p}: no config.json; not a transformers model directory (save the model with "
                             "save_pretrained and pass that folder)")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise TextModelError(f"{p}: no weights (*.safetensors or *.bin) in the model directory")
    return p.resolve()


def _transformers() -> Any:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers
    except ImportError:
        raise TextModelError(f"transformers is not installed; install the '{EXTRA}' extra: "
                             f"pip install 'audiofm[{EXTRA}]'") from None
    return transformers


class _Generator:
    """One local seq2seq or causal LM with its tokenizer."""

    def __init__(self, path: Path, device: str) -> None:
        tf = _transformers()
        cfg = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
        self.seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
        auto = tf.AutoModelForSeq2SeqLM if self.seq2seq else tf.AutoModelForCausalLM
        self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = auto.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device

    def __call__(self, prompts: list[str], seed: int, sample: bool, max_new_tokens: int) -> list[str]:
        import torch
        out: list[str] = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for p in prompts:
                enc = self.tokenizer(p, return_tensors="pt").to(self.device)
                kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample}
                if sample:
                    kw["top_p"] = 0.9
                pad = self.tokenizer.pad_token_id
                kw["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
                ids = self.model.generate(**enc, **kw)[0]
                if not self.seq2seq:
                    ids = ids[enc["input_ids"].shape[1]:]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                out.append(" ".join(text.strip().splitlines()[0].split()) if text.strip() else "")
        return out


class LocalModelRewriter:
    """A :class:`TextRewriter` over a local transformers model (see :func:`local_model_rewriter`)."""

    def __init__(self, path: Path, task: str, back_path: Path | None, prompt: str, max_new_tokens: int,
                 device: str) -> None:
        self.path, self.task, self.back_path = path, task, back_path
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.forward = _Generator(path, device)
        self.back = _Generator(back_path, device) if back_path is not None else None

    def rewrite(self, captions: Sequence[str], seed: int) -> list[str]:
        caps = list(captions)
        if self.task == "back-translate":
            assert self.back is not None
            middle = self.forward(caps, seed, False, self.max_new_tokens)
            out = self.back(middle, seed, False, self.max_new_tokens)
        else:
            out = self.forward([self.prompt.format(caption=c) for c in caps], seed, True, self.max_new_tokens)
        # an empty generation keeps the original caption
        return [o if o else c for o, c in zip(out, caps)]


PARAPHRASE_PROMPT = "paraphrase: {caption}"


def local_model_rewriter(path: str | os.PathLike[str], task: Literal["paraphrase", "back-translate"] = "paraphrase",
                         *, back_path: str | os.PathLike[str] | None = None, prompt: str = PARAPHRASE_PROMPT,
                         max_new_tokens: int = 48, device: str = "cpu") -> LocalModelRewriter:
    """A rewriter over a user's LOCAL transformers model directory (nothing is downloaded).

    ``"paraphrase"``: ``path`` is a seq2seq or causal LM; each caption is put into ``prompt``
    (``{caption}``) and one continuation is sampled (seeded). ``"back-translate"``: ``path``
    translates English into a pivot language and ``back_path`` back (e.g. two Marian models
    saved locally); greedy decoding. The output is not fact-checked: review it, or keep only
    rewrites whose :meth:`Lexicon.facts` match.
    """
    if task not in REWRITE_TASKS:
        raise ValueError(f"task {task!r}; choose one of {', '.join(REWRITE_TASKS)}")
    p = _check_generator_dir(path)
    if task == "back-translate" and back_path is None:
        raise TextModelError(f"{p}: back-translation needs back_path, the local model translating back into English")
    bp = _check_generator_dir(back_path) if back_path is not None else None
    if "{caption}" not in prompt:
        raise ValueError(f"prompt {prompt!r} must contain {{caption}}")
    return LocalModelRewriter(p, task, bp, prompt, max_new_tokens, device)
