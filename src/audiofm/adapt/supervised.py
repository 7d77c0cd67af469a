"""Supervised fine-tuning: a classifier head on the clip embedding, cross-entropy (multiclass)
or one-vs-rest binary cross-entropy (multilabel), label smoothing, mixup, LP-FT head start."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import CheckpointSpec
from ..data.tasks import MULTICLASS, MULTILABEL, LabelledRows
from ..models.encoder import AudioEncoder
from ..models.heads import AdaCosHead, ArcFaceHead, ClassifierHead, Head, MarginHead
from ..train.engine import Batch
from .augment import pad_batch
from .config import FinetuneConfig
from .recipes import AdaptModel, TaskRecipe


def class_scores(logits: Tensor, y: np.ndarray, prediction_type: str) -> dict[str, float]:
    """Metrics of logits ``(N, C)`` against one-/multi-hot ``y``: accuracy or mAP (and d')."""
    from ..eval.metrics import score_predictions

    if prediction_type == MULTICLASS:
        return score_predictions(logits.softmax(1).double().numpy(), y.argmax(1), MULTICLASS)
    return score_predictions(logits.sigmoid().double().numpy(), y, MULTILABEL)


def make_head(cfg: FinetuneConfig, dim: int, n_classes: int) -> Head:
    """The head ``cfg.supervised.head`` names: linear (ClassifierHead), arcface or adacos."""
    sc = cfg.supervised
    if sc.head == "arcface":
        return ArcFaceHead(dim, n_classes, sc.margin_scale, sc.margin, sc.sub_clusters)
    if sc.head == "adacos":
        return AdaCosHead(dim, n_classes, sc.sub_clusters)
    return ClassifierHead(dim, n_classes, sc.head_dropout)


class SupervisedRecipe(TaskRecipe):
    """Classification head on the clip embedding; CE / BCE with smoothing and mixup."""

    def __init__(self, cfg: FinetuneConfig, encoder: AudioEncoder, base_spec: CheckpointSpec,
                 data: LabelledRows) -> None:
        head = make_head(cfg, encoder.dim, len(data.vocabulary))
        super().__init__(cfg, encoder, base_spec, data, head)
        self.primary = "top1_acc" if self.prediction_type == MULTICLASS else "mAP"

    def init_head(self, z_train: np.ndarray) -> dict[str, Any]:
        """With ``head_init='probe'``: the logistic-regression probe (the linear probe's solver),
        its C chosen on validation log-loss (LP-FT)."""
        from ..eval.linear import fit_logistic

        sc = self.cfg.supervised
        if isinstance(self.model.head, MarginHead):
            if self.prediction_type != MULTICLASS:
                raise ValueError(f"the {sc.head} head needs a multiclass task")
            self.model.head.set_centres(z_train, self.y_train)
            return {"head_init": "class means"}
        if sc.head_init != "probe":
            return {}
        head = self.model.head
        assert isinstance(head, ClassifierHead)
        with torch.no_grad():
            xtr = head.norm(torch.from_numpy(z_train)).numpy()
            xva = head.norm(torch.from_numpy(self.embed(self.valid_store)))
        best: tuple[float, float, float, Any] | None = None
        fit = None
        for c in sorted(sc.probe_c_grid):  # strong → weak regularisation, warm-started
            fit = fit_logistic(xtr, self.y_train, c, self.prediction_type == MULTICLASS,
                               init=None if fit is None else fit)
            with torch.no_grad():
                logits = (xva.double() @ torch.from_numpy(fit.weight).T.double()
                          + torch.from_numpy(fit.bias).double()).float()
                loss = float(self.loss_from_logits(logits, torch.from_numpy(self.y_valid)))
            if best is None or loss < best[0]:
                best = (loss, class_scores(logits, self.y_valid, self.prediction_type)[self.primary], c, fit)
        assert best is not None
        with torch.no_grad():
            head.fc.weight.copy_(torch.from_numpy(best[3].weight))
            head.fc.bias.copy_(torch.from_numpy(best[3].bias))
        return {"probe_C": best[2], "probe_valid_loss": best[0], "probe_valid_score": best[1]}

    def loss_from_logits(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        if self.prediction_type == MULTICLASS:
            return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
        # one-vs-rest: sum over classes, mean over clips (as the probes)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(logits)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """The loss over the global batch (this process's clips are embedded here, every
        process's embeddings are gathered before the head)."""
        sc = self.cfg.supervised
        device = next(model.parameters()).device
        views = [self.view(i, s) for i, s in zip(batch.ids, batch.seeds)]
        y = torch.from_numpy(self.y_train[batch.global_ids])  # (B_global, C)
        eps = sc.label_smoothing
        target = (1 - eps) * y + eps / (y.shape[1] if self.prediction_type == MULTICLASS else 2)
        mix = None
        if sc.mixup_alpha > 0:
            perm, lam = self.mixup(batch)
            target = lam[:, None] * target + (1 - lam[:, None]) * target[perm]
            if sc.mixup_level == "waveform":  # mix each local crop with its global partner's
                views = [self._mixed_view(batch, j, v, perm, lam) for j, v in enumerate(views)]
            else:
                mix = (perm, lam)
        x, lengths = pad_batch(views)
        mask = self.masks(lengths, x.shape[1], batch.seeds)
        z, logits = model(x.to(device), lengths.to(device), mask, mix, gather=batch.gather)
        head = getattr(model, "module", model).head
        if isinstance(head, MarginHead):  # the margin / adaptive scale apply while training only
            logits = head.train_logits(z, target.to(device))
        loss = self.loss_from_logits(logits, target.to(device))
        extras: dict[str, float] = {}
        if self.prediction_type == MULTICLASS:
            extras["train_acc"] = float((logits.detach().argmax(1).cpu() == y.argmax(1)).float().mean())
        return loss, extras

    def _mixed_view(self, batch: Batch, j: int, view: Tensor, perm: Tensor, lam: Tensor) -> Tensor:
        g = batch.offset + j
        p = int(perm[g])
        other = self.view(batch.global_ids[p], batch.global_seeds[p])
        n = max(len(view), len(other))
        a, b = F.pad(view, (0, n - len(view))), F.pad(other, (0, n - len(other)))
        return lam[g] * a + (1 - lam[g]) * b

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation accuracy (multiclass) or mAP (multilabel) of the head; ``score`` = that."""
        assert isinstance(model, AdaptModel)
        model.eval()
        z = self.embed(self.valid_store)
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(z).to(next(model.parameters()).device)).float().cpu()
        loss = float(self.loss_from_logits(logits, torch.from_numpy(self.y_valid)))
        m = class_scores(logits, self.y_valid, self.prediction_type)
        out = {f"valid_{k}": v for k, v in m.items()}
        out["valid_loss"] = loss
        out["score"] = m[self.primary]
        return out
