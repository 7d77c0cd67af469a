"""Typed configuration: coercion and checks in config.from_dict, --config/--set for every command,
typed backbone configs and presets, the shipped example configs, help text and the error guard."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import pytest
import yaml

from audiofm import _commands
from audiofm.cli import build_parser, main
from audiofm.config import (
    ConfigError,
    PositiveFloat,
    PositiveInt,
    Range,
    check_ranges,
    from_dict,
    load_yaml,
    parse_overrides,
    to_dict,
)
from audiofm.models.backbones import SIZE_DIMS, backbone_config, preset_fields
from audiofm.models.backbones.mamba import MambaConfig
from audiofm.models.backbones.transformer import TransformerConfig
from audiofm.models.encoder import EncoderConfig
from audiofm.models.registry import DECODERS, list_models, model_config

DATA = Path(__file__).parent / "data"
CONFIGS = resources.files("audiofm") / "configs"


@dataclass
class Inner:
    rate: float = 0.1
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be ≥ 0, got {self.rate}")


@dataclass
class Outer:
    steps: int = 10
    lr: float = 1e-3
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    pair: tuple[float, float] = (0.0, 1.0)
    grid: tuple[float, ...] = (1.0,)
    extra: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    tuned: Inner = field(default_factory=lambda: Inner(rate=0.5))


def test_values_are_coerced_to_their_annotations() -> None:
    cfg = from_dict(Outer, {"steps": "3", "lr": "3e-4", "flag": "yes", "mode": "b", "limit": None,
                            "pair": ["1e-1", 2], "grid": [1e-2, "1e-3", 1], "extra": {"k": "4"},
                            "inner": {"rate": 1, "names": ["x", 7]}})
    assert cfg.steps == 3 and cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.flag is True
    assert cfg.mode == "b" and cfg.limit is None and cfg.pair == (0.1, 2.0) and cfg.grid == (0.01, 0.001, 1.0)
    assert cfg.extra == {"k": 4} and cfg.inner == Inner(rate=1.0, names=["x", "7"])
    assert from_dict(Outer, {"flag": "false", "limit": "5"}).flag is False
    assert from_dict(Outer, {"steps": 4.0}).steps == 4  # an integral number is an integer


def test_partial_nested_section_keeps_the_fields_own_defaults() -> None:
    assert from_dict(Outer, {"tuned": {"names": ["a"]}}).tuned == Inner(rate=0.5, names=["a"])
    assert from_dict(Outer, {"inner": {"names": ["a"]}}).inner == Inner(rate=0.1, names=["a"])


@pytest.mark.parametrize("data,message", [
    ({"steps": 3.7}, "steps: got 3.7, expected an integer"),
    ({"steps": True}, "steps: got True, expected an integer"),
    ({"steps": "many"}, "steps: got 'many', expected an integer"),
    ({"lr": "fast"}, "lr: got 'fast', expected a number"),
    ({"flag": "maybe"}, "flag: got 'maybe', expected true or false"),
    ({"mode": "c"}, "mode: got 'c', expected one of 'a', 'b'"),
    ({"pair": [1.0]}, "pair: got [1.0], expected a list of 2 values (a number, a number)"),
    ({"grid": [1.0, "x"]}, "grid[1]: got 'x', expected a number"),
    ({"inner": 3}, "inner: got 3, expected a mapping of Inner fields"),
    ({"inner": {"names": "x"}}, "inner.names: got 'x', expected a list of strings"),
    ({"limit": "x"}, "limit: got 'x', expected an integer or null"),
])
def test_wrong_values_name_key_value_and_what_is_accepted(data, message) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, where="")
    assert str(e.value) == message


def test_all_problems_in_one_error() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"steps": 3.7, "flag": "maybe", "nope": 1, "inner": {"rate": -1.0}, "tuned": {"x": 1}},
                  where="run")
    msg = str(e.value)
    assert msg.startswith("5 problems: ") and "\n" not in msg and len(e.value.problems) == 5
    assert "run: unknown key(s) nope; valid keys: extra, flag, grid" in msg
    assert "run.steps: got 3.7" in msg and "run.flag: got 'maybe'" in msg
    assert "run.inner: rate must be ≥ 0, got -1.0" in msg  # __post_init__ checks run and are collected
    assert "run.tuned: unknown key(s) x; valid keys: names, rate" in msg


@dataclass
class Ranged:
    steps: PositiveInt = 10
    lr: PositiveFloat = 1e-3
    ratio: Annotated[float, Range(gt=0, le=1)] = 1.0
    limit: PositiveInt | None = None
    grid: tuple[PositiveFloat, ...] = (1.0,)

    def __post_init__(self) -> None:
        check_ranges(self)
        self.derived = 1.0 / self.lr  # runs only on values inside their ranges


def test_ranges_are_declared_once_and_reported_with_every_other_problem() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Ranged, {"steps": 0, "lr": "-1e-3", "ratio": 1.5, "limit": 0, "grid": [1, 0]}, where="")
    assert e.value.problems == ["steps: got 0, expected an integer ≥ 1", "lr: got '-1e-3', expected a number > 0",
                                "ratio: got 1.5, expected a number in (0, 1]",
                                "limit: got 0, expected an integer ≥ 1 or null",
                                "grid[1]: got 0, expected a number > 0"]
    assert from_dict(Ranged, {"steps": 1, "lr": "3e-4", "ratio": 1, "limit": None}).lr == 3e-4
    with pytest.raises(ConfigError, match="lr: got nan"):
        from_dict(Ranged, {"lr": float("nan")})
    # the same declarations check configs built directly, before any derived field is computed
    with pytest.raises(ConfigError, match=r"^2 problems: steps: got 0, .*lr: got 0.0, expected a number > 0$"):
        Ranged(steps=0, lr=0.0)
    assert Range(ge=0, lt=1).describe() == "in [0, 1)" and Range(le=5).describe() == "≤ 5"


def test_library_configs_declare_their_ranges() -> None:
    from audiofm.adapt.config import FinetuneConfig
    from audiofm.cli import DemoConfig, EmbedConfig, StatsConfig
    from audiofm.eval.runconfig import EvalConfig
    from audiofm.frontend import FrontendConfig
    from audiofm.models.backbones.xlstm import XLSTMConfig
    from audiofm.models.msm import ModelConfig
    from audiofm.train.engine import TrainConfig
    from audiofm.train.pretrain import PretrainConfig

    bad = [(TrainConfig, {"lr": -1}, "lr: got -1"), (TrainConfig, {"max_steps": 0}, "max_steps: got 0"),
           (TrainConfig, {"warmup_steps": -1}, "warmup_steps: got -1"),
           (ModelConfig, {"mask_ratio": 1.5}, "mask_ratio"),
           (ModelConfig, {"decoder_depth": 0}, "decoder_depth"), (EncoderConfig, {"patch_t": 0}, "patch_t: got 0"),
           (FrontendConfig, {"sample_rate": 0}, "sample_rate: got 0"), (FrontendConfig, {"std": 0}, "std: got 0"),
           (TransformerConfig, {"heads": 0}, "heads"), (MambaConfig, {"d_state": 0}, "d_state"),
           (XLSTMConfig, {"chunk_size": 0}, "chunk_size"), (PretrainConfig, {"stats_clips": 0}, "stats_clips"),
           (PretrainConfig, {"data": {"max_clips": 0}}, "data.max_clips"),
           (FinetuneConfig, {"contrastive": {"temperature": 0}}, "contrastive.temperature"),
           (FinetuneConfig, {"train": {"batch_size": 0}}, "train.batch_size"),
           (EvalConfig, {"probe": {"mlp": {"dropout": 1}}}, "probe.mlp.dropout"),
           (EvalConfig, {"folds": [-1]}, "folds[0]"), (EmbedConfig, {"chunk_seconds": -1}, "chunk_seconds"),
           (StatsConfig, {"seed": -1}, "seed"), (DemoConfig, {"steps": 0}, "steps")]
    for cls, data, key in bad:
        with pytest.raises(ConfigError, match=re.escape(key)):
            from_dict(cls, data, where="")
    TrainConfig(warmup_steps=5000, max_steps=10)  # warm-up longer than the run is allowed


def test_overrides_are_parsed_as_yaml_and_typed_like_files() -> None:
    over = parse_overrides(["steps=7", "inner.rate=3e-4", "flag=no", "inner.names=[a, b]", "mode="])
    assert over == {"steps": 7, "inner": {"rate": "3e-4", "names": ["a", "b"]}, "flag": False, "mode": ""}
    over.pop("mode")
    cfg = from_dict(Outer, over)
    assert cfg.inner.rate == 3e-4 and cfg.inner.names == ["a", "b"] and cfg.flag is False
    for bad in ("steps", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="key.sub=value"):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="already set"):
        parse_overrides(["inner=1", "inner.rate=2"])


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(config=kw.pop("config", None), set=kw.pop("set", []), **kw)


def test_resolve_config_precedence(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("steps: 5\nlr: 1e-3\ninner:\n  rate: 2e-1\nmode: b\n")
    cfg = _commands.resolve_config(Outer, _args(config=str(y), set=["inner.rate=0.3"]),
                                   {"steps": 6, "lr": None, "inner": {"rate": 0.25, "names": None}})
    assert (cfg.steps, cfg.lr, cfg.mode, cfg.inner.rate) == (6, 1e-3, "b", 0.3)
    cfg = _commands.resolve_config(Outer, _args(config=str(y)), {}, nulls=("limit",))
    assert cfg.limit is None and cfg.inner.rate == 0.2
    with pytest.raises(ConfigError) as e:
        _commands.resolve_config(Outer, _args(set=["steps=3.7"]), {}, required={"extra.k": "--k"})
    assert e.value.problems == ["--k is required (or extra.k in --config)", "steps: got 3.7, expected an integer"]


# ------------------------------------------------------------------ typed backbone configs, presets


def test_encoder_backbone_cfg_is_typed_and_serialises_back() -> None:
    enc = from_dict(EncoderConfig, {"backbone": "mamba", "backbone_cfg": {"dim": "96", "depth": 3,
                                                                        "dt_rank": "auto", "expand": 1}})
    assert isinstance(enc.backbone_cfg, MambaConfig) and enc.dim == 96 and enc.backbone_cfg.expand == 1.0
    assert enc.backbone_cfg.d_state == MambaConfig.d_state  # defaults come from the config class only
    data = to_dict(enc)
    assert data["backbone_cfg"]["dim"] == 96 and data["backbone_cfg"]["direction"] == "bidirectional"
    assert from_dict(EncoderConfig, json.loads(json.dumps(data))) == enc
    assert EncoderConfig().backbone_cfg == TransformerConfig() and EncoderConfig().dim == TransformerConfig.dim
    assert isinstance(EncoderConfig(backbone="xlstm").backbone_cfg, backbone_config("xlstm").__class__)
    assert EncoderConfig(backbone_cfg={"dim": 64, "heads": 2}).dim == 64  # a mapping is converted
    with pytest.raises(ValueError, match="takes a MambaConfig"):
        EncoderConfig(backbone="mamba", backbone_cfg=TransformerConfig())


def test_backbone_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(EncoderConfig, {"backbone": "mamba", "backbone_cfg": {"depth": 2.5, "heads": 3,
                                                                       "direction": "sideways"}}, where="enc")
    msg = str(e.value)
    assert "enc.backbone_cfg: unknown key(s) heads; valid keys: chunk_size, d_conv" in msg
    assert "enc.backbone_cfg.depth: got 2.5, expected an integer" in msg
    assert "enc.backbone_cfg.direction: got 'sideways', expected one of 'forward', 'bidirectional'" in msg
    with pytest.raises(ConfigError, match="enc.backbone_cfg: unknown backbone 'rnn'; available: mamba"):
        from_dict(EncoderConfig, {"backbone": "rnn", "backbone_cfg": {"dim": 8}}, where="enc")
    with pytest.raises(ConfigError, match="unknown backbone 'rnn'"):
        from_dict(EncoderConfig, {"backbone": "rnn"})
    with pytest.raises(ConfigError, match="divisible by heads"):
        backbone_config("transformer", dim=64, heads=5)


def test_old_checkpoint_config_dict_still_loads() -> None:
    from audiofm import checkpoint as ckpt

    saved = json.loads((DATA / "ckpt_v1_msm" / "config.json").read_text())["model"]
    assert isinstance(saved["encoder"]["backbone_cfg"], dict)
    cfg = ckpt.load_config(DATA / "ckpt_v1_msm")
    assert isinstance(cfg.encoder.backbone_cfg, TransformerConfig)
    assert to_dict(cfg.encoder.backbone_cfg) == {**to_dict(TransformerConfig()), **saved["encoder"]["backbone_cfg"]}
    assert cfg.encoder.dim == saved["encoder"]["backbone_cfg"]["dim"]


def test_presets_are_named_tables_of_one_width_per_size() -> None:
    assert len(list_models()) == 4 * len(SIZE_DIMS)
    for name in list_models():
        size = name.rsplit("_", 1)[1]
        cfg = model_config(name)
        assert cfg.encoder.dim == SIZE_DIMS[size], name
        assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads) == (
            DECODERS[size].dim, DECODERS[size].depth, DECODERS[size].heads)
    assert preset_fields("transformer", "tiny") == {"dim": 192, "depth": 12, "heads": 3}
    assert preset_fields("mamba", "tiny", direction="forward")["depth"] == 21
    with pytest.raises(KeyError, match="unknown size 'huge'"):
        preset_fields("xlstm", "huge")
    # --set style overrides are typed too, down to the backbone
    cfg = model_config("msm_xlstm_debug", encoder={"backbone_cfg": {"direction": "forward", "depth": "3"}})
    assert cfg.encoder.backbone_cfg.depth == 3 and cfg.encoder.backbone_cfg.direction == "forward"


# ------------------------------------------------------------------ the command line


def test_readme_set_lr_in_e_notation_trains(tmp_path, audio_folder) -> None:
    run = tmp_path / "run"
    assert main(["pretrain", "--model", "msm_vit_debug", "--data", str(audio_folder), "--out", str(run),
                 "--max-steps", "1", "--batch-size", "2", "--no-progress", "--set", "train.lr=3e-4",
                 "--set", "model_overrides.segment_seconds=0.5", "--set", "train.warmup_steps=1"]) == 0
    saved = yaml.safe_load((run / "run_config.yaml").read_text())
    assert saved["train"]["lr"] == 3e-4


def test_yaml_e_notation_and_eval_c_grid(tmp_path) -> None:
    from audiofm.adapt.commands import config_from_args as finetune_config_from_args
    from audiofm.eval.commands import add_parsers, config_from_args

    y = tmp_path / "eval.yaml"
    y.write_text("probe:\n  linear:\n    c_grid: [1e-2, 1.0]\n  mlp:\n    lr_grid: [1e-3]\n")
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(["evaluate", "--tasks", "t", "--out", "o", "--config", str(y)]))
    assert cfg.probe.linear.c_grid == (0.01, 1.0) and cfg.probe.mlp.lr_grid == (1e-3,)

    from audiofm.adapt.commands import add_parsers as add_adapt

    f = tmp_path / "ft.yaml"
    f.write_text("train:\n  lr: 1e-3\n")
    parser = argparse.ArgumentParser()
    add_adapt(parser.add_subparsers())
    ft = finetune_config_from_args(parser.parse_args(["finetune", "--model", "m", "--task", "t", "--out", "o",
                                                      "--config", str(f)]))
    assert ft.train.lr == 1e-3 and ft.train.max_steps == 100  # the fine-tuning training defaults stay


@pytest.mark.parametrize("argv,parts", [
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT", "--set", "train.max_steps=3.7"],
     ["train.max_steps: got 3.7, expected an integer"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT", "--set", "data.check=maybe"],
     ["data.check: got 'maybe', expected true or false"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT", "--set", "train.max_steps=3.7",
      "--set", "data.check=maybe", "--set", "model_overrides.mask_ratio=lots"],
     ["3 problems: ", "train.max_steps: got 3.7", "data.check: got 'maybe'",
      "model_overrides.mask_ratio: got 'lots'"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT",
      "--set", "model_overrides.encoder.backbone_cfg.depth=2.5", "--set", "model_overrides.mask_ratio=lots"],
     ["model_overrides.encoder.backbone_cfg.depth: got 2.5, expected an integer",
      "model_overrides.mask_ratio: got 'lots', expected a number"]),
    (["pretrain", "--model", "nope", "--out", "OUT", "--set", "model_overrides.encoder.backbone=rnn"],
     ["--data is required", "model: unknown model 'nope'"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT",
      "--set", "model_overrides.mask_ratio=1.5"], ["model_overrides.mask_ratio: got 1.5, expected a number in (0, 1)"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT",
      "--set", "model_overrides.encoder.patch_t=0"],
     ["model_overrides.encoder.patch_t: got 0, expected an integer ≥ 1"]),
    (["embed", "CKPT", "DATA", "--out", "OUT/e.npz", "--set", "batch_size=0"],
     ["batch_size: got 0, expected an integer ≥ 1"]),
    # ranges: declared once in the annotations, all reported together, before anything is written
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT", "--batch-size", "0", "--max-steps",
      "0", "--lr", "-1", "--set", "train.warmup_steps=-1"],
     ["4 problems", "train.max_steps: got 0, expected an integer ≥ 1",
      "train.batch_size: got 0, expected an integer ≥ 1",
      "train.lr: got -1.0, expected a number ≥ 0", "train.warmup_steps: got -1, expected an integer ≥ 0"]),
    (["pretrain", "--model", "msm_mamba_debug", "--data", "DATA", "--out", "OUT",
      "--set", "model_overrides.encoder.backbone_cfg.dt_rank=0", "--set", "model_overrides.encoder.frontend.hop_ms=0"],
     ["model_overrides.encoder.frontend.hop_ms: got 0, expected a number > 0",
      "model_overrides.encoder.backbone_cfg.dt_rank: got 0, expected an integer ≥ 1 or one of 'auto'"]),
    (["finetune", "--model", "CKPT", "--task", "DATA", "--out", "OUT", "--layer-decay", "0", "--set",
      "supervised.probe_c_grid=[1, -1]", "--set", "augment.noise_prob=2"],
     ["layer_decay: got 0.0, expected a number in (0, 1]", "supervised.probe_c_grid[1]: got -1, expected a number > 0",
      "augment.noise_prob: got 2, expected a number in [0, 1]"]),
    (["evaluate", "--baseline", "logmel", "--tasks", "DATA", "--out", "OUT", "--seeds", "0", "--set",
      "probe.knn.k_grid=[0]", "--set", "confidence=1"],
     ["seeds: got 0, expected an integer ≥ 1", "probe.knn.k_grid[0]: got 0, expected an integer ≥ 1",
      "confidence: got 1, expected a number in (0, 1)"]),
    (["stats", "DATA", "--max-clips", "0"], ["max_clips: got 0, expected an integer ≥ 1"]),
    (["demo", "--out", "OUT", "--minutes", "0", "--per-family", "1"],
     ["minutes: got 0.0, expected a number > 0", "per_family: got 1, expected an integer ≥ 2"]),
    (["adapt-report", "CKPT", "--task", "DATA", "--out", "OUT", "--batch-size", "0"],
     ["batch_size: got 0, expected an integer ≥ 1"]),
    (["stats", "DATA", "--set", "max_clips=lots"], ["max_clips: got 'lots', expected an integer"]),
    (["demo", "--out", "OUT", "--set", "precision=fp16"], ["precision: got 'fp16', expected one of"]),
    (["evaluate", "--baseline", "logmel", "--tasks", "DATA", "--out", "OUT", "--set", "seeds=1.5"],
     ["seeds: got 1.5, expected an integer"]),
    (["evaluate", "--baseline", "logmel", "--set", "probe.linear.c_grid=[1e-2, x]"],
     ["--tasks is required", "--out is required", "probe.linear.c_grid[1]: got 'x', expected a number"]),
    (["report", "RUN", "--out", "OUT", "--set", "compare_to=worst"], ["compare_to: got 'worst'"]),
    (["finetune", "--model", "CKPT", "--task", "DATA", "--out", "OUT", "--set", "train.max_steps=3.7"],
     ["train.max_steps: got 3.7, expected an integer"]),
    (["adapt-report", "CKPT", "--out", "OUT", "--set", "fold=x"],
     ["--task is required", "fold: got 'x', expected an integer"]),
    (["pretrain", "--model", "msm_vit_debug", "--data", "DATA", "--out", "OUT", "--stats", "DATA/x.flac"],
     ["--stats DATA/x.flac: expected the JSON written by 'audiofm stats'"]),
])
def test_bad_settings_are_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, audio_folder,
                                                              argv, parts) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "CKPT").mkdir()
    (audio_folder / "x.flac").write_bytes(b"{not json")
    sub = {"DATA": str(audio_folder), "OUT": str(tmp_path / "out"), "CKPT": str(tmp_path / "CKPT"),
           "RUN": str(tmp_path / "CKPT")}

    def fill(a: str) -> str:
        for k, v in sub.items():
            a = a.replace(k, v)
        return a

    assert main([fill(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"audiofm {argv[0]}: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert fill(part) in err, (part, err)
    assert not (tmp_path / "out").exists()


def test_every_option_says_what_it_does_and_its_default() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"pretrain", "embed", "stats", "info", "demo", "evaluate", "report", "finetune",
                                "adapt-report", "shards", "export", "asd", "index", "search", "serve",
                                "retrieval"}
    asd = next(a for a in sub.choices["asd"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(asd.choices) == {"run", "embed", "pseudo", "finetune", "score"}
    ret = next(a for a in sub.choices["retrieval"]._actions if isinstance(a, argparse._SubParsersAction))
    assert set(ret.choices) == {"train", "evaluate"}
    for name, p in [*sub.choices.items(), *((f"asd {k}", v) for k, v in asd.choices.items()),
                    *((f"retrieval {k}", v) for k, v in ret.choices.items())]:
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if action.option_strings:
                assert "default" in action.help or "required" in action.help, (name, action.dest)
        text = p.format_help()
        assert not re.search(r"\{@?[\w.:]+\}", text), name  # every {default} placeholder filled
        if name in ("pretrain", "embed", "stats", "demo", "evaluate", "report", "finetune", "adapt-report",
                    "export", "asd run", "retrieval train"):
            assert "--config" in text and "--set" in text, name
    pre = " ".join(sub.choices["pretrain"].format_help().split())
    assert "(default: msm_vit_tiny)" in pre and "(default: 1000)" in pre and "(default: 0.0005)" in pre
    ft = " ".join(sub.choices["finetune"].format_help().split())
    assert "peak learning rate (default: 0.0001)" in ft and "(default: 10)" in ft


def test_help_teaches_every_command_and_option() -> None:
    """A walk over every sub-command's help: what each argument does, its default or that it is
    required, no unfilled placeholders or markup; the top-level help lists every command."""
    parser = build_parser()
    top = parser.format_help()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert re.search(rf"^\s+{re.escape(name)}\s", top, re.M), name
        assert p.description, name
        text = p.format_help()
        assert not re.search(r"`|\{@?[\w.:]+\}|:class:|\*\*", text), (name, text)
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            shown = " ".join((action.help or "").split())
            assert re.search(r"\((default|required)[:,)]|\(required", shown) or "default:" in shown, (name, action.dest)
            if action.required:  # required options and positionals say so
                assert "required" in shown, (name, action.dest)
    assert not re.search(r"`|\{|\*\*|:class:", top) and "COMMAND --help" in top
    for name in ("pretrain", "finetune", "embed", "evaluate"):
        assert "usage: audiofm " + name in sub.choices[name].format_help()


def test_guard_debug_traceback_and_interrupt(monkeypatch, capsys) -> None:
    def boom() -> int:
        raise ConfigError("bad value")

    def stop() -> int:
        raise KeyboardInterrupt

    assert _commands.guarded("x", boom) == 2
    assert capsys.readouterr().err == "audiofm x: error: bad value\n"
    assert _commands.guarded("x", stop, on_interrupt=" (kept)") == 130
    assert capsys.readouterr().err == "audiofm x: interrupted (kept)\n"
    assert _commands.guarded("x", lambda: (_ for _ in ()).throw(FileNotFoundError(2, "No such file", "f"))) == 2
    assert capsys.readouterr().err == "audiofm x: error: f: No such file\n"
    monkeypatch.setenv("AUDIOFM_DEBUG", "1")
    with pytest.raises(ConfigError):
        _commands.guarded("x", boom)
    assert main(["info", "--list"]) == 0 and "msm_vit_tiny" in capsys.readouterr().out
    monkeypatch.delenv("AUDIOFM_DEBUG")
    assert main(["info", "/no/such/ckpt"]) == 2
    assert capsys.readouterr().err.startswith("audiofm info: error: ")


# ------------------------------------------------------------------ shipped example configs


def test_example_configs_ship_and_load_through_their_command_configs() -> None:
    from audiofm.adapt.config import FinetuneConfig
    from audiofm.eval.suite import EvalConfig
    from audiofm.train.pretrain import PretrainConfig

    names = sorted(p.name for p in CONFIGS.iterdir() if p.name.endswith(".yaml"))
    assert names == ["contrastive_tuning.yaml", "eval_dev.yaml", "pretrain_tiny.yaml"]
    pre = from_dict(PretrainConfig, load_yaml(str(CONFIGS / "pretrain_tiny.yaml")))
    assert pre.model == "msm_vit_tiny" and pre.train.lr == 5e-4 and pre.data.max_clips == 5000
    assert model_config(pre.model, **pre.model_overrides).mask_ratio == 0.75
    ft = from_dict(FinetuneConfig, load_yaml(str(CONFIGS / "contrastive_tuning.yaml")))
    assert ft.method == "contrastive" and ft.train.lr == 3e-4 and ft.layer_decay == 0.9
    assert ft.train.max_steps == FinetuneConfig().train.max_steps  # the section keeps FinetuneConfig's defaults
    ev = from_dict(EvalConfig, load_yaml(str(CONFIGS / "eval_dev.yaml")))
    assert ev.probes == ["linear", "knn"] and ev.probe.linear.c_grid == (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in names:
        assert f"configs/{name}" in readme, name


def test_example_pretrain_config_runs(tmp_path, audio_folder) -> None:
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(CONFIGS / "pretrain_tiny.yaml"), "--model", "msm_vit_debug",
                 "--data", str(audio_folder), "--out", str(run), "--max-steps", "1", "--batch-size", "2",
                 "--no-progress", "--set", "model_overrides.segment_seconds=0.5", "--set", "train.warmup_steps=1",
                 "--set", "train.ckpt_every=1"]) == 0
    saved = yaml.safe_load((run / "run_config.yaml").read_text())
    assert saved["data"]["max_clips"] == 5000 and saved["train"]["precision"] in ("fp32", "bf16")  # auto, resolved


def test_example_eval_config_runs(tmp_path) -> None:
    from test_eval_suite import write_task

    from audiofm.eval.commands import main as eval_main

    tasks = tmp_path / "tasks"
    write_task(tasks, "pitch-kfold", folds=3, per_class=3)
    run = tmp_path / "eval"
    assert eval_main(["evaluate", "--config", str(CONFIGS / "eval_dev.yaml"), "--baseline", "logmel",
                      "--tasks", str(tasks), "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["probes"] == ["linear", "knn"] and saved["max_folds"] == 1
    assert (run / "results.csv").is_file()
