"""What ``audiofm evaluate`` runs: its configuration, the task directories and the embedders."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from ..config import NonNegativeInt, PositiveInt, Range, check_ranges
from ..data import HearTask, is_hear_task, is_shard_dir, read_hear_task
from ..data.shards import shard_tasks
from ..embedding import FREQ_MIXES, LAYER_MIXES, POOLINGS, AudioEmbedder
from .probe_base import ProbeConfig
from .registry import PROBES
from .results import EvalError

__all__ = ["EmbedderSpec", "EvalConfig", "EvalError", "discover_tasks", "load_embedders", "model_label"]


@dataclass
class EvalConfig:
    """What ``audiofm evaluate`` runs.

    models: checkpoint directories (``audiofm.load``) or ``.onnx`` graphs of ``audiofm export``
    (``OnnxEmbedder``; layer and pooling are the graph's). baselines: "logmel", "random" (the
    first model, randomly initialised) or peer names (``audiofm.peers``). tasks: a HEAR task
    dir or a dir of task dirs; only: task names to keep. probes: subset of linear/mlp/knn.
    seeds: seeds 0..seeds-1. out: run directory. folds: round indices to run (k-fold: fold i
    is test) or None for all; max_folds: keep the first N rounds. batch_size: clips per
    ``embed_batch`` call. cache: embedding cache dir (None → ``$AUDIOFM_CACHE`` if set, else
    ``<out>/embeddings``). pooling / layer / layers / layer_mix / freq_mix: passed to ``audiofm.load`` and
    ``random_like`` (:class:`audiofm.api.Embedder`); so is precision ('bf16': the encoders under bf16
    autocast; its embeddings are cached apart from fp32 ones; not for ONNX graphs or baselines).
    probe: probe hyper-parameter grids. confidence: CI level. compare_to: paired comparisons
    against the "first" model or the "best" per task. random_seed: init seed of the "random"
    baseline. threads: CPU threads for torch, BLAS and faiss during the whole run (None: the
    libraries' defaults). probe_threads: threads while fitting probes (default 1: probes work on
    small matrices, and oversubscribed BLAS/OpenMP threads made them 3-20× slower on a shared
    machine; None: inherit). jobs: worker processes that fit probes while this one embeds the next
    tasks (1: every fit here, in turn); results are the same for any value (:mod:`audiofm.eval.pool`).
    On 2 cores, ``jobs=2, threads=1`` keeps both busy. overwrite: allow an out dir that already holds results.
    progress: show bars.
    """

    models: list[str] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    tasks: str = ""
    only: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=lambda: list(PROBES))
    seeds: PositiveInt = 5
    out: str = ""
    folds: list[NonNegativeInt] | None = None
    max_folds: PositiveInt | None = None
    batch_size: PositiveInt = 16
    cache: str | None = None
    pooling: str = "mean"
    layer: int = -1
    layers: NonNegativeInt = 1  # 0 = every block up to layer
    layer_mix: str = "mean"
    freq_mix: str = "mean"
    precision: Literal["fp32", "bf16"] = "fp32"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    confidence: Annotated[float, Range(gt=0, lt=1)] = 0.95
    compare_to: str = "first"
    random_seed: NonNegativeInt = 0
    threads: PositiveInt | None = None
    probe_threads: PositiveInt | None = 1
    jobs: PositiveInt = 1
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_ranges(self)
        bad = [p for p in self.probes if p not in PROBES]
        if bad or not self.probes:
            raise EvalError(f"unknown probe(s) {bad or '(none)'}; choose from {', '.join(PROBES)}")
        if self.pooling not in POOLINGS:
            raise EvalError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.layer_mix not in LAYER_MIXES:
            raise EvalError(f"--layer-mix must be one of {', '.join(LAYER_MIXES)}, got {self.layer_mix!r}")
        if self.freq_mix not in FREQ_MIXES:
            raise EvalError(f"--freq-mix must be one of {', '.join(FREQ_MIXES)}, got {self.freq_mix!r}")
        if self.compare_to not in ("first", "best"):
            raise EvalError(f"--compare-to must be 'first' or 'best', got {self.compare_to!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def cache_dir(self) -> Path:
        if self.cache:
            return Path(self.cache)
        env = os.environ.get("AUDIOFM_CACHE")
        return Path(env) / "embeddings" if env else Path(self.out) / "embeddings"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> EvalConfig:
        """Build from a (YAML/JSON) mapping through :func:`audiofm.config.from_dict` (nested
        ``probe`` sections may be partial); problems raise ConfigError naming the key."""
        from ..config import from_dict

        return from_dict(cls, d, where)

    def embed_settings(self) -> dict[str, Any]:
        """The embedding settings of audiofm checkpoints (``audiofm.load`` keywords); ``layers``
        and ``layer_mix`` only when several blocks are read, ``freq_mix`` only when it is not the
        mean, so that the cache keys of runs made before they existed stay the same."""
        out: dict[str, Any] = {"layer": self.layer, "pooling": self.pooling}
        if self.layers != 1:
            out.update(layers=self.layers, layer_mix=self.layer_mix)
        if self.freq_mix != "mean":
            out["freq_mix"] = self.freq_mix
        if self.precision != "fp32":
            out["precision"] = self.precision
        return out


def load_tasks(path: str | os.PathLike[str], only: list[str] | None = None) -> list[HearTask]:
    """The tasks under ``path``: HEAR task dirs (:func:`discover_tasks`) or the tasks kept in a
    shard directory (``audiofm shards`` of a task or a dir of tasks)."""
    if is_shard_dir(path):
        return shard_tasks(path, only)
    return [read_hear_task(d) for d in discover_tasks(path, only)]


def discover_tasks(path: str | os.PathLike[str], only: list[str] | None = None) -> list[Path]:
    """Task dirs under ``path`` (itself a task, or a dir of tasks), sorted, filtered by ``only``."""
    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"{p}: --tasks must be a HEAR task directory or a directory of them")
    found = [p] if is_hear_task(p) else sorted(c for c in p.iterdir() if c.is_dir() and is_hear_task(c))
    if not found:
        raise EvalError(f"{p}: no HEAR task found (a task dir holds task_metadata.json)")
    if only:
        names = {c.name: c for c in found}
        missing = [o for o in only if o not in names]
        if missing:
            raise EvalError(f"--only: task(s) {missing} not in {p}; available: {sorted(names)}")
        found = [names[o] for o in only]
    return found


# -------------------------------------------------------------------------------- embedders


@dataclass
class EmbedderSpec:
    """An embedder with the label it gets in results and the cache settings it adds."""

    label: str
    embedder: AudioEmbedder
    settings: dict[str, Any]
    source: str


def model_label(path: str, layer: int, pooling: str, layers: int = 1, layer_mix: str = "mean",
                precision: str = "fp32", freq_mix: str = "mean") -> str:
    name = Path(path.rstrip("/\\")).name or path
    extras = []
    if layer != -1:
        extras.append(f"layer={layer}")
    if layers != 1:
        extras.append(f"layers={layers or 'all'}" + ("" if layer_mix == "mean" else f"-{layer_mix}"))
    if freq_mix != "mean":
        extras.append(f"freq-{freq_mix}")
    if pooling != "mean":
        extras.append(pooling)
    if precision != "fp32":
        extras.append(precision)
    return f"{name}[{','.join(extras)}]" if extras else name


def load_embedders(cfg: EvalConfig) -> list[EmbedderSpec]:
    """Models first (in order), then baselines; labels made unique."""
    from .baselines import make_baseline

    specs: list[EmbedderSpec] = []
    settings = cfg.embed_settings()
    for path in cfg.models:
        if not Path(path).exists():
            raise EvalError(f"{path}: no such checkpoint directory (--model expects a directory with "
                            "config.json and model.safetensors, or an exported .onnx file)")
        emb: AudioEmbedder
        if path.endswith(".onnx"):  # an `audiofm export` graph, run by ONNX Runtime
            from ..export.embedder import OnnxEmbedder

            if cfg.precision != "fp32":
                raise EvalError(f"{path}: an exported graph runs in the precision it was exported in; evaluate "
                                "it without --precision bf16 (or evaluate the checkpoint)")
            emb = OnnxEmbedder(path)
            if cfg.layers != 1:
                raise EvalError(f"{path}: an exported graph reads one block; evaluate it without --layers "
                                "(or evaluate the checkpoint)")
            if cfg.freq_mix != "mean":
                raise EvalError(f"{path}: an exported graph averages frequency patches; evaluate it without "
                                "--freq-mix (or evaluate the checkpoint)")
            for key in ("layer", "pooling"):
                if getattr(cfg, key) != getattr(emb, key):
                    raise EvalError(f"{path} was exported with {key}={getattr(emb, key)!r}; evaluate it with "
                                    f"--{key} {getattr(emb, key)} (or export it again)")
        else:
            import audiofm

            emb = audiofm.load(path, **settings)
        specs.append(EmbedderSpec(model_label(path, cfg.layer, cfg.pooling, cfg.layers, cfg.layer_mix,
                                              cfg.precision, cfg.freq_mix), emb,
                                  settings, path))
    for name in cfg.baselines:
        emb = make_baseline(name, cfg.models, seed=cfg.random_seed, **settings)
        if name == "random":
            label = f"random-init({specs[0].label})"
            specs.append(EmbedderSpec(label, emb, {**settings, "init_seed": cfg.random_seed}, "random"))
        else:
            specs.append(EmbedderSpec(name, emb, {}, name))
    if not specs:
        raise EvalError("nothing to evaluate: give --model CKPT and/or --baseline NAME[,NAME]")
    seen: dict[str, int] = {}
    for s in specs:
        if s.label in seen:
            seen[s.label] += 1
            s.label = f"{s.label}-{seen[s.label]}"
        else:
            seen[s.label] = 1
    return specs
