"""Contrastive audio–text training of a :class:`~audiofm.retrieval.model.DualEncoder` on the
shared engine.

Items are (clip, caption) pairs; a global batch is a set of pairs, and every caption of the same
clip in it is a positive (:func:`~audiofm.retrieval.losses.multi_positive_infonce` over the
projections gathered from every process: the recipe is ``batch_coupled``). Optional terms:

* distillation (``distill_weight``): the teachers' (dual checkpoints) audio embeddings of every
  training clip and text embeddings of every training caption are computed once; the batch
  target is their averaged similarity matrix (:func:`~audiofm.retrieval.losses.distillation_loss`);
* pseudo-classes (``cluster_weight``): the training captions are clustered
  (:func:`audiofm.retrieval.clusters.cluster_captions`), each clip gets its majority class, and a
  linear classifier on the projected audio embedding is trained with cross-entropy.

A frozen tower's pre-projection features are computed once, deterministically (whole clips,
chunked as :func:`audiofm.load` does), and cached in an
:class:`~audiofm.eval.cache.EmbeddingCache` keyed by the tower and the data, so a step costs
only the projections. A trained audio tower sees random crops (``crop_seconds``) drawn from the
pairs' per-item seeds (pure functions of the seed, so resume and N processes stay exact).
Validation (:meth:`RetrievalRecipe.evaluate`) is text→audio mAP@10 on the validation split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import CheckpointSpec
from ..config import ConfigError
from ..data import Row, fingerprint
from ..data.captions import pair_relevance
from ..data.dataset import ClipStore
from ..eval.cache import EmbeddingCache, content_stamp
from ..train.engine import Batch
from .config import RetrievalConfig
from .losses import distillation_loss, multi_positive_infonce
from .metrics import relevance_matrix, text_to_audio
from .model import DualEncoder

__all__ = ["Clips", "RetrievalModule", "RetrievalRecipe", "text_matrix"]

CHUNK = 64  # clips decoded per feature batch (bounds the memory of whole-clip features)


class Clips(ClipStore):
    """Training clips: the dataset rows, then the augmented items (rendered from two rows)."""

    def __init__(self, rows: Sequence[Row], items: Sequence[Any], sample_rate: int, cache_mb: float) -> None:
        super().__init__(rows, sample_rate, cache_mb)
        self.items = list(items)
        self.n_rows = len(self.rows)

    def __len__(self) -> int:
        return self.n_rows + len(self.items)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rows] + [it.id for it in self.items]

    def captions(self, i: int) -> list[str]:
        return list(self.rows[i].captions) if i < self.n_rows else list(self.items[i - self.n_rows].captions)

    def wave(self, i: int) -> np.ndarray:
        if i < self.n_rows:
            return super().wave(i)
        from .augment import render

        return render(self.items[i - self.n_rows], self)


class RetrievalModule(nn.Module):
    """What the engine optimises: the dual encoder's parts under their own names (so its
    checkpoints are "dual" checkpoints) plus training-only heads under ``aux``.

    ``forward(audio, text, gather)``: ``audio`` is pre-projection features ``(B, audio_dim)`` or
    waves ``(B, S)`` (``waves=True``); ``text`` features ``(B, text_dim)`` or a list of captions.
    Returns the gathered (global) projections ``a, t (B_global, E)``, the temperature and the
    cluster logits of ``a`` (None without a cluster head)."""

    def __init__(self, dual: DualEncoder, aux: nn.ModuleDict | None = None) -> None:
        super().__init__()
        for name, child in dual.named_children():
            self.add_module(name, child)
        if aux is not None:
            self.aux = aux
        self._dual = [dual]  # the same modules, not registered twice

    @property
    def dual(self) -> DualEncoder:
        return self._dual[0]

    def forward(self, audio: Tensor, text: Tensor | list[str], *, waves: bool = False,
                gather: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        dual = self.dual
        fa = dual.audio_features(audio) if waves else audio  # (B, audio_dim)
        ft = dual.text_features(text) if isinstance(text, list) else text  # (B, text_dim)
        a, t = dual.project_audio(fa), dual.project_text(ft)  # (B, E) unit norm
        if gather is not None:
            a, t = gather(a), gather(t)  # (B_global, E)
        logits = self.aux["cluster"](a) if hasattr(self, "aux") else None
        return a, t, dual.temperature(), logits

    def train(self, mode: bool = True) -> RetrievalModule:
        super().train(mode)
        self.dual.train(mode)  # frozen parts back to eval mode
        return self


def text_matrix(dual: DualEncoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(N, text_dim) float32 pre-projection text features, deterministic (eval mode, no grad)."""
    was = dual.text.training
    dual.text.train(False)
    try:
        parts = [np.zeros((0, dual.text_dim), dtype=np.float32)]
        with torch.no_grad():
            for s in range(0, len(texts), batch_size):
                parts.append(dual.text_features(list(texts[s : s + batch_size])).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    finally:
        dual.text.train(was)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def audio_tower_id(dual: DualEncoder) -> dict[str, Any]:
    """What a frozen audio tower's features depend on (the key of its cached features)."""
    if dual.embedder is not None:
        return {"embedder": dual.cfg.audio_model, "fingerprint": dual.embedder.fingerprint()}
    return {"audio": dual.provenance.get("audio"), "layer": dual.cfg.layer, "pooling": dual.cfg.pooling,
            "segment_seconds": dual.segment_seconds, "sample_rate": dual.sample_rate}


def text_tower_id(dual: DualEncoder) -> dict[str, Any]:
    return {"text": dual.text.fingerprint, "max_tokens": dual.text.max_tokens}


class FeatureCache:
    """Cached feature matrices (an :class:`EmbeddingCache` directory); counts what it computed."""

    def __init__(self, cache: EmbeddingCache | None) -> None:
        self.cache = cache
        self.computed: list[str] = []
        self.hits: list[str] = []

    def get(self, name: str, task: str, meta: dict[str, Any], ids: Sequence[str],
            compute: Callable[[], np.ndarray]) -> np.ndarray:
        key = _digest(meta)
        path = self.cache.path_for(name, task, key) if self.cache is not None else None
        if self.cache is not None and path is not None:
            hit = self.cache.load(path, key, ids)
            if hit is not None:
                self.hits.append(f"{task}/{name}")
                return hit
        x = np.ascontiguousarray(compute(), dtype=np.float32)
        self.computed.append(f"{task}/{name}")
        if self.cache is not None and path is not None:
            self.cache.save(path, key, meta, ids, x)
        return x


class RetrievalRecipe:
    """The engine recipe (see the module docstring). ``train_rows`` / ``valid_rows``: caption
    rows (``row.captions``); ``seed``: the run's seed (augmentation, clusters)."""

    batch_coupled = True

    def __init__(self, cfg: RetrievalConfig, dual: DualEncoder, train_rows: Sequence[Row],
                 valid_rows: Sequence[Row], *, seed: int, cache: EmbeddingCache | None = None,
                 progress: bool = False) -> None:
        if not train_rows or not valid_rows:
            raise ValueError("retrieval training needs training and validation rows with captions")
        self.cfg, self.dual, self.seed, self.progress = cfg, dual, seed, progress
        sr = dual.sample_rate
        aug = cfg.augmentation
        rows = list(train_rows)
        if aug.paraphrases:
            from .paraphrase import paraphrase_rows

            rows = paraphrase_rows(rows, aug.paraphrases, seed)
        items: list[Any] = []
        if aug.mix_pairs:
            from .augment import mix_pairs

            items = mix_pairs(rows, aug.mix_pairs, seed, mode=aug.mix_mode,  # type: ignore[arg-type]
                              snr_db=aug.mix_snr_db)
        self.clips = Clips(rows, items, sr, cfg.cache_mb)
        self.pair_clip = np.array([c for c in range(len(self.clips)) for _ in self.clips.captions(c)], dtype=np.int64)
        self.pair_text = [t for c in range(len(self.clips)) for t in self.clips.captions(c)]
        self.crop = round((cfg.crop_seconds or dual.segment_seconds) * sr)
        self.features = FeatureCache(cache)
        self.data_id = {"rows": fingerprint(rows), "content": content_stamp(rows),
                        "items": _digest([getattr(it, "__dict__", str(it)) for it in items])[:16]}
        self.audio_feats = self._audio_features() if dual.audio_frozen else None
        text_needed = dual.text_frozen or cfg.cluster_weight > 0
        self.text_feats = self._text_features() if text_needed else None
        # validation: whole clips, every caption a query
        self.valid_rows = list(valid_rows)
        self.valid_queries = [c for r in self.valid_rows for c in r.captions]
        ids = [r.id for r in self.valid_rows]
        self.valid_pairs = relevance_matrix(self.valid_queries, ids, pair_relevance(self.valid_rows), "validation")
        self.valid_store = ClipStore(self.valid_rows, sr, cfg.cache_mb / 4)
        self._valid_audio = self._valid_audio_features() if dual.audio_frozen else None
        self._valid_text = self._valid_text_features() if dual.text_frozen else None
        self.teachers = self._teacher_embeddings() if cfg.distill_weight > 0 else []
        aux = None
        self.clip_class: Tensor | None = None
        self.cluster_info: dict[str, Any] = {}
        if cfg.cluster_weight > 0:
            self.clip_class, self.cluster_info = self._clusters()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                aux = nn.ModuleDict({"cluster": nn.Linear(dual.cfg.embed_dim, self.cluster_info["n_clusters"])})
        self.model = RetrievalModule(dual, aux)

    # -- what the engine asks -------------------------------------------------------------
    @property
    def spec(self) -> CheckpointSpec:
        return self.dual.spec()

    def num_examples(self) -> int:
        return len(self.pair_clip)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        cfg, dual = self.cfg, self.dual
        ids = np.asarray(batch.ids, dtype=np.int64)
        clips = self.pair_clip[ids]
        if self.audio_feats is not None:
            audio, waves = torch.from_numpy(self.audio_feats[clips]), False
        else:
            crops = [self.clips.crop(int(c), self.crop, s) for c, s in zip(clips, batch.seeds)]
            audio, waves = torch.from_numpy(np.stack(crops)).float(), True  # (B, S)
        text: Tensor | list[str]
        if dual.text_frozen and self.text_feats is not None:
            text = torch.from_numpy(self.text_feats[ids])
        else:
            text = [self.pair_text[i] for i in ids]
        device = next(dual.audio_proj.parameters()).device
        a, t, tau, logits = model(audio.to(device), text if isinstance(text, list) else text.to(device),
                                  waves=waves, gather=batch.gather)
        gids = np.asarray(batch.global_ids, dtype=np.int64)
        gclips = torch.from_numpy(self.pair_clip[gids])
        con = multi_positive_infonce(a, t, gclips.to(device), tau)
        total = con
        extras = {"contrastive": float(con.detach()), "temperature": float(tau.detach())}
        if cfg.distill_weight > 0:
            sims = torch.stack([ta[gclips] @ tt[torch.from_numpy(gids)].T for ta, tt in self.teachers])  # (M, B, B)
            dist = distillation_loss(a, t, sims.to(device), tau, cfg.teacher_temperature)
            total = total + cfg.distill_weight * dist
            extras["distillation"] = float(dist.detach())
        if cfg.cluster_weight > 0:
            assert logits is not None and self.clip_class is not None
            ce = F.cross_entropy(logits, self.clip_class[gclips].to(device))
            total = total + cfg.cluster_weight * ce
            extras["cluster"] = float(ce.detach())
        return total, extras

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Text→audio retrieval on the validation split; ``score`` = mAP@10 (original pairs)."""
        model.eval()
        fa = self._valid_audio if self._valid_audio is not None else self._valid_audio_features(cache=False)
        ft = self._valid_text if self._valid_text is not None else self._valid_text_features(cache=False)
        with torch.no_grad():
            a = self.dual.project_audio(torch.from_numpy(fa)).float().cpu().numpy()
            t = self.dual.project_text(torch.from_numpy(ft)).float().cpu().numpy()
        res = text_to_audio(t @ a.T, self.valid_pairs)
        out = {f"valid_{k}": v for k, v in res.metrics.items() if k != "map_at_16"}
        out["score"] = res.metrics["map_at_10"]
        return out

    # -- features -------------------------------------------------------------------------
    def _audio_matrix(self, store: ClipStore) -> np.ndarray:
        """Deterministic whole-clip features of every clip of ``store``, CHUNK clips at a time."""
        parts = [np.zeros((0, self.dual.audio_dim), dtype=np.float32)]
        for s in range(0, len(store), CHUNK):
            waves = [store.wave(i) for i in range(s, min(len(store), s + CHUNK))]
            parts.append(self.dual.audio_features_frozen(waves, store.sample_rate,
                                                         batch_size=self.cfg.eval_batch_size))
        return np.concatenate(parts)

    def _audio_features(self) -> np.ndarray:
        meta = {"kind": "audio", "tower": audio_tower_id(self.dual), **self.data_id}
        return self.features.get("audio", "retrieval-train", meta, self.clips.ids,
                                 lambda: self._audio_matrix(self.clips))

    def _text_features(self) -> np.ndarray:
        meta = {"kind": "text", "tower": text_tower_id(self.dual), "texts": _digest(self.pair_text)}
        return self.features.get("text", "retrieval-train", meta, [str(i) for i in range(len(self.pair_text))],
                                 lambda: text_matrix(self.dual, self.pair_text))

    def _valid_audio_features(self, cache: bool = True) -> np.ndarray:
        if not cache:
            return self._audio_matrix(self.valid_store)
        meta = {"kind": "audio", "tower": audio_tower_id(self.dual), "rows": fingerprint(self.valid_rows),
                "content": content_stamp(self.valid_rows)}
        return self.features.get("audio", "retrieval-valid", meta, [r.id for r in self.valid_rows],
                                 lambda: self._audio_matrix(self.valid_store))

    def _valid_text_features(self, cache: bool = True) -> np.ndarray:
        if not cache:
            return text_matrix(self.dual, self.valid_queries)
        meta = {"kind": "text", "tower": text_tower_id(self.dual), "texts": _digest(self.valid_queries)}
        return self.features.get("text", "retrieval-valid", meta, [str(i) for i in range(len(self.valid_queries))],
                                 lambda: text_matrix(self.dual, self.valid_queries))

    def _teacher_embeddings(self) -> list[tuple[Tensor, Tensor]]:
        """Per teacher: (clip embeddings (N_clips, E), caption embeddings (N_pairs, E)), unit norm."""
        from .model import load_dual
        from .train import models_of

        out = []
        for path in [str(m) for t in self.cfg.teachers for _, m in models_of(t)]:  # a run: every seed's model
            teacher = load_dual(path, batch_size=self.cfg.eval_batch_size)
            fp = teacher.fingerprint()

            def audio(t: Any = teacher) -> np.ndarray:
                parts = [np.zeros((0, t.embed_dim), dtype=np.float32)]
                for s in range(0, len(self.clips), CHUNK):
                    waves = [self.clips.wave(i) for i in range(s, min(len(self.clips), s + CHUNK))]
                    parts.append(t.embed_audio_batch(waves, self.clips.sample_rate))
                return np.concatenate(parts)

            ta = self.features.get(f"teacher-{fp}-audio", "retrieval-train", {"kind": "teacher-audio", "teacher": fp,
                                                                           **self.data_id},
                                   self.clips.ids, audio)
            def text(t: Any = teacher) -> np.ndarray:
                return np.asarray(t.embed_text(self.pair_text))

            tt = self.features.get(f"teacher-{fp}-text", "retrieval-train",
                                   {"kind": "teacher-text", "teacher": fp, "texts": _digest(self.pair_text)},
                                   [str(i) for i in range(len(self.pair_text))], text)
            out.append((torch.from_numpy(ta), torch.from_numpy(tt)))
        return out

    def _clusters(self) -> tuple[Tensor, dict[str, Any]]:
        """One pseudo-class per training clip from clusters of its captions' text features."""
        from .clusters import clip_labels, cluster_captions

        assert self.text_feats is not None
        res = cluster_captions(self.text_feats, self.cfg.clusters, self.cfg.cluster_method,  # type: ignore[arg-type]
                               seed=self.seed)
        labels = np.asarray(clip_labels(res.labels, self.pair_clip), dtype=np.int64)
        n = int(labels.max()) + 1
        if n < 2:
            raise ConfigError(f"cluster_weight={self.cfg.cluster_weight:g} but n_clusters={self.cfg.n_clusters} found "
                              f"one cluster in the training captions ({res.criterion}), so the pseudo-class term "
                              "would be constant; set n_clusters to a count (e.g. --set n_clusters=16) or "
                              "cluster_weight to 0")
        return torch.from_numpy(labels), {"n_clusters": n, "cluster_method": self.cfg.cluster_method}
