"""``audiofm asd run`` and the stages alone: ``asd embed``, ``asd pseudo``, ``asd finetune``,
``asd score``.

``audiofm.cli`` calls :func:`add_parsers` with its sub-parser collection. ``asd run`` resolves
:class:`~audiofm.asd.pipeline.AsdConfig` through :func:`audiofm._commands.resolve_config`
(defaults < ``--config`` < flags < ``--set``); the stage commands take flags only and pass their
files along (embeddings npz → labels CSV → classifier checkpoint → embeddings → run directory).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._commands import add_config_options, command, config_defaults, resolve_config, standalone_main

ASD = "audiofm.asd.pipeline:AsdConfig"
DATA_HELP = "machine-type folder or folder of them (required)"
YEAR_HELP = "force the DCASE layout year (default: detected)"


def add_parsers(subparsers: Any) -> None:
    """Register ``asd`` (with its sub-commands) on an ``argparse`` sub-parser collection."""
    top = subparsers.add_parser("asd", formatter_class=config_defaults(ASD),
                                help="anomalous sound detection (DCASE Task 2): run the pipeline or a stage",
                                description="Anomalous sound detection on DCASE Task 2 layouts (2020-2025); see "
                                            "docs/asd.md.")
    sub = top.add_subparsers(dest="asd_command", metavar="STAGE",
                             help="run, or one stage: embed, pseudo, finetune, score (required)")
    top.set_defaults(func=lambda args: (top.print_help(), 2)[1])

    r = sub.add_parser("run", help="the whole pipeline over seeds, with tables, plots and submissions",
                       formatter_class=config_defaults(ASD),
                       description="Embed (after DAPT / attribute fine-tuning as --method says), score with the "
                                   "backend per machine type, and write results.csv (long format, for `audiofm "
                                   "report`), table.md/csv, ROC and histogram PNGs, submission CSVs, clusters.json "
                                   "and config.json to --out. Settings: AsdConfig (audiofm.asd.pipeline; sections "
                                   "dapt, pseudo, finetune, ae) — defaults < --config < flags < --set.")
    r.add_argument("--data", metavar="DCASE_ROOT", help="machine-type folder or folder of them (required)")
    r.add_argument("--model", metavar="CKPT", help="checkpoint / run dir, a preset name (random init), or with "
                   "--method frozen only 'logmel' or a peer: {@audiofm.asd.pipeline:PEERS} (settings as "
                   "NAME:KEY=VALUE; resolved by audiofm.eval.baselines.make_baseline) (required except for "
                   "--method ae)")
    r.add_argument("--method", choices=["frozen", "dapt", "pseudo-ft", "attr-ft", "ae"],
                   help="what to do with the model (default: {method})")
    r.add_argument("--backend", help="scoring backend, one of {@audiofm.asd.scoring:BACKENDS} (default: {backend})")
    r.add_argument("--k", type=int, help="neighbours of the kNN backends (default: {k})")
    r.add_argument("--seeds", type=int, help="number of seeds, from --first-seed on (default: {seeds})")
    r.add_argument("--first-seed", type=int, help="first seed, e.g. to add seeds 1-2 to a one-seed run in a new "
                   "--out (default: {first_seed})")
    r.add_argument("--out", metavar="RUN_DIR", help="new run directory (required)")
    r.add_argument("--label", help="model label in the tables (default: the model's name)")
    r.add_argument("--year", type=int, help="force the DCASE layout year (default: detected)")
    r.add_argument("--dapt", action="store_true", help="pseudo-ft / attr-ft: domain-adaptive pretraining first "
                   "(default: {dapt.enabled})")
    r.add_argument("--dapt-minutes", type=float, help="DAPT wall-time budget (default: {dapt.budget_minutes})")
    r.add_argument("--head", choices=["linear", "arcface", "adacos"], help="fine-tuning head "
                   "(default: {finetune.supervised.head})")
    r.add_argument("--epochs", type=float, help="fine-tuning epochs (default: {finetune.epochs})")
    r.add_argument("--ae-mode", choices=["mse", "mahalanobis"], help="AE score (default: {ae.mode})")
    r.add_argument("--ae-epochs", type=int, help="AE training epochs (default: {ae.epochs})")
    r.add_argument("--threads", type=int, help="torch threads (default: {threads} = library default)")
    add_config_options(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bars (default: off)")
    r.set_defaults(func=command("asd run", cmd_run))

    e = sub.add_parser("embed", help="clip embeddings of every train and test clip (npz)",
                       formatter_class=config_defaults(ASD),
                       description="Embed every train and test clip of DCASE_ROOT into one npz (ids, clip).")
    e.add_argument("--data", required=True, metavar="DCASE_ROOT", help=DATA_HELP)
    e.add_argument("--model", required=True, help="checkpoint, preset (random init), 'logmel' or a peer: "
                   "{@audiofm.asd.pipeline:PEERS} (required)")
    e.add_argument("--out", required=True, metavar="FILE.npz", help="embeddings file to write (required)")
    e.add_argument("--seed", type=int, default=0, help="random-init seed of a preset (default: 0)")
    e.add_argument("--year", type=int, help=YEAR_HELP)
    e.add_argument("--batch-size", type=int, default=16, help="clips per embedding batch (default: 16)")
    e.set_defaults(func=command("asd embed", cmd_embed))

    p = sub.add_parser("pseudo", help="pseudo-attribute labels of the training clips (CSV + clusters.json)")
    p.add_argument("--data", required=True, metavar="DCASE_ROOT", help=DATA_HELP)
    p.add_argument("--embeddings", required=True, metavar="FILE.npz", help="from `asd embed` (required)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for labels.csv and clusters.json (required)")
    p.add_argument("--use-attributes", action="store_true", help="real attributes where present (default: "
                   "clusters everywhere)")
    p.add_argument("--linkage", default="ward", help="scipy linkage (default: ward)")
    p.add_argument("--per-domain", action="store_true", help="cluster each domain apart (default: pooled)")
    p.add_argument("--max-clusters", type=int, default=16, help="largest cluster count tried (default: 16)")
    p.add_argument("--year", type=int, help=YEAR_HELP)
    p.set_defaults(func=command("asd pseudo", cmd_pseudo))

    f = sub.add_parser("finetune", help="attribute-classification fine-tuning → classifier checkpoint")
    f.add_argument("--data", required=True, metavar="DCASE_ROOT", help=DATA_HELP)
    f.add_argument("--model", required=True, metavar="CKPT", help="checkpoint or preset to tune (required)")
    f.add_argument("--labels", required=True, metavar="labels.csv", help="from `asd pseudo` (id,label) (required)")
    f.add_argument("--out", required=True, metavar="RUN_DIR", help="new fine-tuning run directory (required)")
    f.add_argument("--head", choices=["linear", "arcface", "adacos"], default="arcface",
                   help="classification head (default: arcface)")
    f.add_argument("--epochs", type=float, default=5.0, help="passes over the training clips (default: 5)")
    f.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning (default: 0)")
    f.add_argument("--year", type=int, help=YEAR_HELP)
    f.add_argument("--no-progress", action="store_true", help="no progress bar (default: off)")
    f.set_defaults(func=command("asd finetune", cmd_finetune))

    s = sub.add_parser("score", help="score test embeddings with a backend; tables, plots, submission",
                       formatter_class=config_defaults(ASD),
                       description="Fit the backend per machine type on the training embeddings, score the test "
                                   "clips and write results.csv, table.md/csv, plots and submission CSVs.")
    s.add_argument("--data", required=True, metavar="DCASE_ROOT", help=DATA_HELP)
    s.add_argument("--embeddings", required=True, metavar="FILE.npz", help="from `asd embed` (train + test) "
                   "(required)")
    s.add_argument("--backend", default="knn", help="scoring backend, one of {@audiofm.asd.scoring:BACKENDS} "
                   "(default: knn)")
    s.add_argument("--k", type=int, default=1, help="neighbours of the kNN backends (default: 1)")
    s.add_argument("--label", default="", help="model label (default: the npz name)")
    s.add_argument("--seed", type=int, default=0, help="seed recorded in results.csv (default: 0)")
    s.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write (required)")
    s.add_argument("--year", type=int, help=YEAR_HELP)
    s.set_defaults(func=command("asd score", cmd_score))


def config_from_args(args: argparse.Namespace) -> Any:
    from .pipeline import AsdConfig

    flags: dict[str, Any] = {
        "data": args.data, "model": args.model, "method": args.method, "backend": args.backend, "k": args.k,
        "seeds": args.seeds, "first_seed": args.first_seed, "out": args.out, "label": args.label, "year": args.year,
        "threads": args.threads,
        "progress": False if args.no_progress else None,
        "dapt": {"enabled": True if args.dapt else None, "budget_minutes": args.dapt_minutes},
        "finetune": {"epochs": args.epochs, "supervised": {"head": args.head}},
        "ae": {"mode": args.ae_mode, "epochs": args.ae_epochs},
    }
    return resolve_config(AsdConfig, args, flags, required={"data": "--data", "out": "--out"})


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_asd

    res = run_asd(config_from_args(args))
    score = res["official_score"]
    print(f"{res['label']} · {res['method']}: official score "
          f"{'n/a' if score is None else f'{100 * score:.1f}'} in {res['seconds']:.0f} s; {res['out']}/table.md",
          file=sys.stderr)
    return 0


def _rows(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from ..data.dcase import read_dcase
    from .pipeline import split_rows

    return split_rows(read_dcase(args.data, year=args.year))


def cmd_embed(args: argparse.Namespace) -> int:
    from .pipeline import embed, make_embedder, save_embeddings

    train, test = _rows(args)
    rows = train + test
    x = embed(make_embedder(args.model, args.seed), rows, args.batch_size)
    save_embeddings(args.out, rows, x)
    print(f"{len(rows)} clips × {x.shape[1]} dims → {args.out}", file=sys.stderr)
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    from ..io import write_json, write_text
    from .pipeline import PseudoConfig, attribute_labels, load_embeddings

    train, _ = _rows(args)
    x = load_embeddings(args.embeddings, train)
    labs = attribute_labels(train, x, PseudoConfig(args.linkage, args.per_domain, args.max_clusters),
                            use_attributes=args.use_attributes)
    out = Path(args.out)
    write_text(out / "labels.csv", "id,label\n" + "".join(f"{r.id},{lab}\n" for r, lab in zip(train, labs.labels)))
    write_json(out / "clusters.json", labs.diagnostics)
    print(f"{len(set(labs.labels))} labels over {len(train)} training clips → {out}/labels.csv", file=sys.stderr)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from ..config import ConfigError
    from .pipeline import _default_finetune, finetune_attributes

    train, _ = _rows(args)
    with open(args.labels, newline="") as fh:
        by_id = {r["id"]: r["label"] for r in csv.DictReader(fh)}
    missing = [r.id for r in train if r.id not in by_id]
    if missing:
        raise ConfigError(f"{args.labels}: no label for {len(missing)} training clip(s), e.g. {missing[:3]}")
    cfg = _default_finetune()
    cfg = dataclasses.replace(cfg, epochs=args.epochs,
                              supervised=dataclasses.replace(cfg.supervised, head=args.head))
    ck = finetune_attributes(args.model, train, [by_id[r.id] for r in train], cfg, Path(args.out), args.seed,
                             progress=not args.no_progress)
    print(f"classifier checkpoint {ck}", file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .pipeline import finish_seed, load_embeddings, machine_counts, score_machines, write_tables

    train, test = _rows(args)
    xtr, xte = load_embeddings(args.embeddings, train), load_embeddings(args.embeddings, test)
    kwargs = {"k": args.k} if args.backend in ("knn", "knn-domain") else {}
    s_test, s_train = score_machines(train, xtr, test, xte, args.backend, **kwargs)
    out = Path(args.out)
    label = args.label or Path(args.embeddings).stem
    results = finish_seed(out, args.seed, train, s_train, test, s_test, model=label, method=args.backend,
                          n_train=machine_counts(train))
    summary = write_tables(out, results, f"{label} · {args.backend}")
    score = next((r["mean"] for r in summary if r["task"] == "all" and r["metric"] == "official_score"), None)
    print(f"official score {'n/a' if score is None else f'{100 * score:.1f}'}; {out}/table.md", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m audiofm.asd.commands asd run ...``."""
    return standalone_main(add_parsers, argv)


if __name__ == "__main__":
    raise SystemExit(main())
