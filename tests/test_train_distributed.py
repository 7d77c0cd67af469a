"""The engine's distributed pieces with 2 gloo CPU processes: the feature gather behind
``Batch.gather``, a batch-coupled (contrastive + batch-statistics) loss through the engine,
the refusal of gradient accumulation for such losses, and budget calibration (rank 0, broadcast)."""

from __future__ import annotations

import json
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

import audiofm
from audiofm.checkpoint import CheckpointSpec
from audiofm.config import ConfigError
from audiofm.train.budget import calibrate_steps
from audiofm.train.distributed import Dist, gather_features
from audiofm.train.engine import Batch, Engine, TrainConfig, micro_batches

WORLD = 2


def _worker(rank: int, out: Path) -> None:
    """Every 2-process case in one pair of processes (starting them is the slow part)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))  # a collective mismatch fails, not hangs
    try:
        _gather_case(rank, out)
        _engine_case(rank, out)
        _calibrate_case(rank, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the results of :func:`_worker` in 2 gloo CPU processes."""
    out = tmp_path_factory.mktemp("two_processes")
    mp.spawn(_worker, args=(out,), nprocs=WORLD)
    return out


def coupled_loss(z: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Batch-coupled: scale by the batch's standard deviation (batch statistics), then a
    softmax over the batch with same-label rows as positives (SupCon-like). Not centred: that
    would make the loss blind to the last biases, whose zero gradients Adam turns into noise."""
    z = z / (z.std(0) + 1e-5)
    z = F.normalize(z, dim=1)
    eye = torch.eye(len(z), dtype=torch.bool)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(1)  # anchors with a positive
    return -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has]).mean()


class Net(nn.Module):
    """Features of a batch, gathered over processes inside the forward (as recipes must)."""

    def __init__(self, d_in: int = 5, d_out: int = 4) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor, gather: object = None) -> Tensor:
        z = torch.tanh(self.lin(x))
        return gather(z) if callable(gather) else z


GATHER_X = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
GATHER_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _gather_case(rank: int, out: Path) -> None:
    x, labels = GATHER_X, GATHER_LABELS
    res = {}
    for name, sizes in (("equal", [4, 4]), ("unequal", [3, 5])):
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Net())
        lo = sum(sizes[:rank])
        z = model(x[lo : lo + sizes[rank]], gather=gather_features)  # (B_global, 4) on every rank
        loss = coupled_loss(z, labels)
        loss.backward()  # DDP averages the parameter gradients over the two processes
        res[name] = {"z": z.detach(), "loss": loss.detach(),
                     "grads": {k: p.grad.clone() for k, p in model.module.named_parameters()}}
    torch.save(res, out / f"gather{rank}.pt")


def test_gather_features_matches_one_process(two_processes):
    """Forward: the concatenated batch in rank order; backward: with DDP's averaging, exactly
    the single-process gradient of the loss over the whole batch (equal and unequal shares)."""
    x, labels = GATHER_X, GATHER_LABELS
    torch.manual_seed(0)
    ref = Net()
    z_ref = ref(x)
    loss_ref = coupled_loss(z_ref, labels)
    loss_ref.backward()
    for rank in range(WORLD):
        res = torch.load(two_processes / f"gather{rank}.pt")
        for case in res.values():
            torch.testing.assert_close(case["z"], z_ref.detach(), rtol=0, atol=1e-6)
            torch.testing.assert_close(case["loss"], loss_ref.detach(), rtol=1e-6, atol=1e-7)
            for k, p in ref.named_parameters():
                torch.testing.assert_close(case["grads"][k], p.grad, rtol=1e-5, atol=1e-7)
    # without the gather each process's loss sees only its half: a different gradient
    torch.manual_seed(0)
    half = Net()
    (coupled_loss(half(x[:4]), labels[:4]) + coupled_loss(half(x[4:]), labels[4:])).div(2).backward()
    assert not torch.allclose(half.lin.weight.grad, ref.lin.weight.grad, atol=1e-3)
    assert gather_features(x) is x  # one process: the identity
    b = Batch([0, 1], [5, 6], step=0, offset=0, global_ids=[0, 1], global_seeds=[5, 6])
    assert b.gather(x) is x


class Tower(nn.Module):
    """Encoder + projection; the projections gathered over processes inside the forward."""

    def __init__(self, encoder: nn.Module, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(dim, 8)

    def forward(self, wave: Tensor, gather: object = None) -> Tensor:
        z = self.head(self.encoder.clip_embedding(wave))  # type: ignore[operator]
        return gather(z) if callable(gather) else z


class CoupledRecipe:
    """Contrastive tuning in miniature: a tiny encoder + projection, clips of 2 classes, the
    batch-coupled loss over the gathered global batch (or, ``gather=False``, over each micro-batch)."""

    batch_coupled = True

    def __init__(self, gather: bool = True, n: int = 16) -> None:
        torch.manual_seed(0)
        msm = audiofm.create_model("msm_vit_debug", segment_seconds=0.5)
        self.spec = CheckpointSpec.from_model_config(msm.cfg)  # kind msm: every key kept
        self.model = Tower(msm.encoder, msm.cfg.encoder.dim)
        rng = np.random.default_rng(0)
        t = np.arange(8000) / 16000
        self.labels = torch.arange(n) % 2  # any 4 clips hold a positive pair
        self.waves = torch.from_numpy(np.stack([
            np.sin(2 * np.pi * 300 * (1 + int(c)) * t) + 0.1 * rng.standard_normal(t.size)
            for c in self.labels]).astype(np.float32))
        self.gather = gather
        self.interrupt: tuple[int, int] | None = None  # (rank, step) that sends itself SIGINT

    def num_examples(self) -> int:
        return len(self.waves)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        if self.interrupt == (batch.rank, batch.step):
            os.kill(os.getpid(), signal.SIGINT)
        wave = self.waves[batch.ids]
        if not self.gather:
            return coupled_loss(model(wave), self.labels[batch.ids]), {}
        z = model(wave, gather=batch.gather)  # (global batch, 8), rows in global-batch order
        return coupled_loss(z, self.labels[batch.global_ids]), {}


def _train_cfg() -> TrainConfig:
    return TrainConfig(max_steps=4, batch_size=8, lr=1e-3, warmup_steps=1, log_every=1, ckpt_every=100,
                       seed=2, device="cpu")


def _fit(run: Path, gather: bool, resume: bool = False, interrupt: tuple[int, int] | None = None
         ) -> dict[str, Any]:
    recipe = CoupledRecipe(gather)
    recipe.interrupt = interrupt
    res = Engine(recipe, _train_cfg(), run, resume=resume, progress=False).fit()
    return {**res, "state": {k: v.detach().clone() for k, v in recipe.model.state_dict().items()}}


def _engine_case(rank: int, out: Path) -> None:
    res = {name: _fit(out / f"two_{name}", gather) for name, gather in (("gather", True), ("local", False))}
    # rank 1 alone is interrupted during step 1: both processes stop after it, then resume
    res["interrupted"] = _fit(out / "two_resumed", True, interrupt=(1, 1))
    res["resumed"] = _fit(out / "two_resumed", True, resume=True)
    torch.save(res, out / f"engine{rank}.pt")


def _losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_batch_coupled_loss_two_processes_match_one(two_processes, tmp_path):
    """The engine with a batch-coupled loss: 2 processes × 4 clips == 1 process × 8 clips when
    the loss is computed over ``batch.gather``; clearly not without it."""
    one = _fit(tmp_path / "one", gather=True)["state"]
    two = [torch.load(two_processes / f"engine{r}.pt") for r in range(WORLD)]
    for k in one:  # the two processes hold the same weights
        assert torch.equal(two[0]["gather"]["state"][k], two[1]["gather"]["state"][k])
    assert _losses(two_processes / "two_gather") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    # gradients are averaged in a different order, so Adam's normalised steps differ by float
    # noise: bound the gap well below one step (lr 1e-3) and its mean far below that
    gap = torch.cat([(one[k] - two[0]["gather"]["state"][k]).abs().flatten() for k in one])
    assert gap.max() < 1e-4 and gap.mean() < 1e-6
    local = torch.cat([(one[k] - two[0]["local"]["state"][k]).abs().flatten() for k in one])
    assert local.mean() > 1e-5  # the micro-batch loss is a different objective
    assert _losses(two_processes / "two_local")[0] != pytest.approx(_losses(tmp_path / "one")[0], rel=1e-3)


def test_two_processes_stop_together_and_resume_exactly(two_processes):
    """A signal seen by one process stops every process at the same step (none is left waiting
    in a collective), with a checkpoint; resuming with 2 processes retraces the uninterrupted run."""
    two = [torch.load(two_processes / f"engine{r}.pt") for r in range(WORLD)]
    assert [(t["interrupted"]["status"], t["interrupted"]["step"]) for t in two] == [("interrupted", 2)] * 2
    assert (two_processes / "two_resumed" / "checkpoints" / "step_00000002").is_dir()
    assert [t["resumed"]["status"] for t in two] == ["completed"] * 2
    full, resumed = two[0]["gather"]["state"], two[0]["resumed"]["state"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert _losses(two_processes / "two_resumed") == _losses(two_processes / "two_gather")


def test_batch_coupled_recipe_refuses_accumulation(tmp_path):
    cfg = _train_cfg()
    cfg.accum_steps = 2
    with pytest.raises(ConfigError, match=r"train\.accum_steps=2") as e:
        Engine(CoupledRecipe(), cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(e.value) and "accum_steps: 1" in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_micro_batches_partition_the_global_batch():
    ids, seeds = list(range(100, 112)), list(range(12))
    parts = [b for r in range(2) for b in micro_batches(ids, seeds, 5, r, 2, 3)]
    assert [b.offset for b in parts] == [0, 2, 4, 6, 8, 10]
    assert [i for b in parts for i in b.ids] == ids and [s for b in parts for s in b.seeds] == seeds
    assert all(b.global_ids == ids and b.step == 5 and b.world == 2 for b in parts)
    assert [b.rank for b in parts] == [0, 0, 0, 1, 1, 1]
    assert all(b.ids == b.global_ids[b.offset : b.offset + 2] for b in parts)


class TimedRecipe:
    """A recipe whose step takes ``delay`` seconds; records what each loss call saw."""

    def __init__(self, delay: float) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(3, 2)
        self.spec = None
        self.delay = delay
        self.calls: list[tuple[int, str, int]] = []

    def num_examples(self) -> int:
        return 64

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        import time

        device = next(model.parameters()).device
        self.calls.append((len(batch.ids), str(device), batch.world))
        time.sleep(self.delay)
        x = torch.ones(len(batch.ids), 3, device=device)
        return model(x).square().mean(), {}


def _calibrate_case(rank: int, out: Path) -> None:
    recipe = TimedRecipe(delay=0.01 if rank == 0 else 0.2)  # rank 1 would choose far fewer steps
    cfg = TrainConfig(batch_size=8, accum_steps=2, seed=0, device="cpu")
    steps = calibrate_steps(recipe, cfg, minutes=0.02, device=torch.device("cpu"), d=Dist(rank, WORLD))
    (out / f"calib{rank}.json").write_text(json.dumps({"steps": steps, "calls": recipe.calls}))


def test_calibration_on_rank_zero_is_broadcast(two_processes):
    r0, r1 = (json.loads((two_processes / f"calib{r}.json").read_text()) for r in range(WORLD))
    assert r0["steps"] == r1["steps"]  # every rank trains rank 0's count
    assert r1["calls"] == []  # rank 1 never timed anything
    # rank 0 timed its share: 8 clips / 2 processes / 2 micro-batches, alone (no gather)
    assert r0["calls"] and all(c == [2, "cpu", 1] for c in r0["calls"])
    assert len(r0["calls"]) == 4 * 2  # (3 timed + 1 warm-up) steps × 2 micro-batches
    # 1.2 s budget / (2 × 10 ms per step + overhead); rank 1's own timing would give ≤ 3
    assert 10 <= r0["steps"] <= 60


def test_calibration_runs_on_the_training_device():
    """Timed on the device given (here "meta": no data, so no real work), never on a CPU copy."""
    recipe = TimedRecipe(delay=0.001)
    cfg = TrainConfig(batch_size=4, seed=0, device="cpu")
    steps = calibrate_steps(recipe, cfg, minutes=1.0, device=torch.device("meta"), d=Dist())
    assert steps >= 1 and {c[1] for c in recipe.calls} == {"meta"}
    assert next(recipe.model.parameters()).device.type == "cpu"  # the recipe's own model is untouched
