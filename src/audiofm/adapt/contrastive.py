"""Contrastive-tuning: SupCon (Jaccard-weighted for multilabel) on a projection of two views
per clip, in class-balanced batches; the projection head is dropped at the end."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointSpec
from ..data.tasks import MULTICLASS, LabelledRows
from ..models.encoder import AudioEncoder
from ..models.heads import ProjectionHead
from ..train.engine import Batch
from .augment import augment_wave, pad_batch
from .config import FinetuneConfig
from .losses import supcon_loss
from .recipes import TaskRecipe
from .sampler import ClassBalancedSampler, auto_clips_per_class, seed_of


class ContrastiveRecipe(TaskRecipe):
    """SupCon (Jaccard-weighted for multilabel) on a projection of two views per clip."""

    def __init__(self, cfg: FinetuneConfig, encoder: AudioEncoder, base_spec: CheckpointSpec,
                 data: LabelledRows) -> None:
        cc = cfg.contrastive
        D = encoder.dim
        super().__init__(cfg, encoder, base_spec, data, ProjectionHead(D, cc.proj_hidden or D, cc.proj_dim))
        class_lists = [[int(c) for c in np.flatnonzero(y)] for y in self.y_train]
        n_active = len({c for cl in class_lists for c in cl})
        B = cfg.train.batch_size
        K = cc.clips_per_class or auto_clips_per_class(B, n_active)
        if B % K:
            raise ValueError(f"train.batch_size={B} must be a multiple of contrastive.clips_per_class={K}")
        self.sampler = ClassBalancedSampler(class_lists, len(self.vocabulary), B // K, K)

    def result_spec(self) -> CheckpointSpec:
        """The tuned encoder alone: the projection head only served the loss."""
        s = self.base_spec
        return CheckpointSpec("encoder", s.name, s.encoder, s.segment_seconds)

    def batch_ids(self, seed: int, step: int, batch_size: int) -> tuple[list[int], list[int]]:
        return self.sampler(seed, step, batch_size)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        a = self.cfg.augment
        ids, seeds = batch.ids, batch.seeds
        waves = [augment_wave(self.store.wave(i), self.crop, a, seed_of(s, v))
                 for v in (1, 3) for i, s in zip(ids, seeds)]  # view 1 of every clip, then view 2
        x, lengths = pad_batch(waves)  # (2B, S)
        mask = self.masks(lengths, x.shape[1], [seed_of(s, v) for v in (2, 4) for s in seeds])
        _, proj = model(x.to(device), lengths.to(device), mask, gather=batch.gather)  # (2B_global, E)
        y = torch.from_numpy(self.y_train[ids])
        labels = y.argmax(1) if self.prediction_type == MULTICLASS else y
        labels = batch.gather(torch.cat([labels, labels]).to(device))  # same order as proj
        return supcon_loss(proj, labels, self.cfg.contrastive.temperature), {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """kNN probe (eval package) of the validation clips against the training clips; the
        score is its validation accuracy (multiclass) or mAP (multilabel) at the best k."""
        from ..eval.probes import ProbeData, knn_probe

        model.eval()
        xtr, xva = self.embed(self.store), self.embed(self.valid_store)
        ytr, yva = self.y_train, self.y_valid
        if self.prediction_type == MULTICLASS:
            ytr, yva = ytr.argmax(1), yva.argmax(1)
        data = ProbeData(xtr, ytr, xva, yva, xva, yva, self.prediction_type, len(self.vocabulary))
        res = knn_probe(data)
        out = {f"valid_knn_{k}": v for k, v in res.valid_metrics.items()}
        out["valid_knn_k"] = float(res.hparams["k"])
        out["score"] = res.valid_metrics["top1_acc" if self.prediction_type == MULTICLASS else "mAP"]
        return out
