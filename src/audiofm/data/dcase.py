"""DCASE Task 2 (anomalous sound detection) data: every year's layout, read into :class:`Row`.

A dataset root is one machine-type folder (``<type>/train``, ``<type>/test``, ...) or a folder of
them. File names are parsed into the row: ``split`` ("train" | "test" | "supplemental", from the
folder), ``domain`` ("source" | "target"; "" when hidden or, in 2020, absent), ``labels``
(["normal"] | ["anomaly"]; [] when hidden) and ``attributes``. The row's attributes hold the
machine's own attributes under their names (``{"mdl": "diablo", "spd": "090"}``) and the DCASE
bookkeeping under ``dcase.*`` keys: ``dcase.machine``, ``dcase.section`` (the 2020 machine ID),
``dcase.index``, ``dcase.year``, ``dcase.hidden`` ("attributes" for ``_noAttribute`` files) and
``dcase.kind`` (2025 supplemental files). :func:`dcase_clip` gives the typed view.

Names per year (``<a>`` = ``<key>_<value>`` pairs; ``.wav`` in DCASE, any audio suffix accepted):

* 2020: ``{normal|anomaly}_id_<ID>_<8 digits>``; evaluation test ``id_<ID>_<8 digits>``.
* 2021: ``section_<00-05>_{source|target}_{train|test}_{normal|anomaly}_<NNNN>`` in ``train/``,
  ``source_test/``, ``target_test/``; evaluation test ``section_<ss>_{source|target}_test_<NNNN>``.
* 2022: ``section_<00-05>_{source|target}_{train|test}_{normal|anomaly}_<NNNN>_<a>``,
  ``attributes_<ss>.csv`` per section; evaluation test ``section_<ss>_<NNNN>``.
* 2023-2025: as 2022 with section 00 only and ``attributes_00.csv``; 2024 numbers from 0001 and
  has ``_noAttribute`` files (attributes hidden); 2025 adds
  ``supplemental/section_00_{source|target}_supplemental_<kind>_<NNNN>[_<a>]``.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from .dcase_truth import GroundTruth, read_ground_truth
from .manifest import DataError, Row

YEARS = (2020, 2021, 2022, 2023, 2024, 2025)
SPLIT_FOLDERS = {"train": ("train", ""), "test": ("test", ""), "source_test": ("test", "source"),
                 "target_test": ("test", "target"), "supplemental": ("supplemental", "")}
NO_ATTRIBUTE = "noAttribute"
RAW = "attributes"  # key for name attributes that are not <key>_<value> pairs

_ATTRS = r"(?:_(?P<attrs>.+))?"
_DEV = (r"section_(?P<section>{sec})_(?P<domain>source|target)_(?P<split>train|test)"
        r"_(?P<label>normal|anomaly)_(?P<index>\d{{4}})" + _ATTRS)
_EVAL = r"section_(?P<section>{sec})_(?P<index>\d{{4}})"
_SUPPL = (r"section_(?P<section>{sec})_(?P<domain>source|target)_supplemental_(?P<kind>[A-Za-z]+)"
          r"_(?P<index>\d{{4}})" + _ATTRS)
_PATTERNS: dict[int, list[str]] = {
    2020: [r"(?:(?P<label>normal|anomaly)_)?id_(?P<section>\d\d)_(?P<index>\d{8})"],
    2021: [r"section_(?P<section>0[0-5])_(?P<domain>source|target)_(?P<split>train|test)"
           r"(?:_(?P<label>normal|anomaly))?_(?P<index>\d{4})" + _ATTRS],
    2022: [_DEV.format(sec="0[0-5]"), _EVAL.format(sec="0[0-5]")],
    2023: [_DEV.format(sec="00"), _EVAL.format(sec="00")],
    2024: [_DEV.format(sec="00"), _EVAL.format(sec="00")],
    2025: [_DEV.format(sec="00"), _EVAL.format(sec="00"), _SUPPL.format(sec="00")],
}
_COMPILED = {y: [re.compile(p + "$") for p in ps] for y, ps in _PATTERNS.items()}
EXPECTED = {
    2020: "{normal|anomaly}_id_<ID>_<8 digits> (evaluation test: id_<ID>_<8 digits>)",
    2021: "section_<00-05>_{source|target}_{train|test}_{normal|anomaly}_<NNNN> "
          "(evaluation test: section_<ss>_{source|target}_test_<NNNN>)",
    2022: "section_<00-05>_{source|target}_{train|test}_{normal|anomaly}_<NNNN>_<key>_<value>... "
          "(evaluation test: section_<ss>_<NNNN>)",
    2023: "section_00_{source|target}_{train|test}_{normal|anomaly}_<NNNN>_<key>_<value>... "
          "(evaluation test: section_00_<NNNN>)",
}
EXPECTED[2024] = EXPECTED[2023] + "; _noAttribute when attributes are hidden"
EXPECTED[2025] = EXPECTED[2024] + "; supplemental/section_00_{source|target}_supplemental_<kind>_<NNNN>"


class DcaseNameError(DataError):
    """File names that do not follow the year's pattern (all of them, with the expected pattern).

    ``reason`` is the short per-file part, used when many names are listed under one pattern.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass
class DcaseClip:
    """What a DCASE file name (plus ground truth) says about a clip."""

    machine: str
    section: str                 # "00".."05"; in 2020 the machine ID
    split: str                   # "train" | "test" | "supplemental" ("" if neither folder nor name says)
    index: str
    domain: str = ""             # "source" | "target" | "" (hidden / 2020)
    label: str = ""              # "normal" | "anomaly" | "" (hidden)
    attributes: dict[str, str] = field(default_factory=dict)
    attributes_hidden: bool = False
    kind: str = ""               # 2025 supplemental kind


def parse_name(name: str, year: int, machine: str = "", split: str = "") -> DcaseClip:
    """Parse one file name (basename, with or without suffix) of ``year``'s layout.

    ``split`` is the folder's split; when given, a name that says otherwise is an error.
    """
    if year not in _COMPILED:
        raise DataError(f"unknown DCASE year {year} (known: {', '.join(map(str, YEARS))})")
    stem = Path(name).stem if Path(name).suffix.lower() in AUDIO_EXTENSIONS else name
    for pat in _COMPILED[year]:
        m = pat.match(stem)
        if m:
            break
    else:
        raise DcaseNameError(f"{name}: not a DCASE {year} name; expected {EXPECTED[year]}",
                             reason=f"{name}: not a DCASE {year} name")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    name_split = "supplemental" if "kind" in g else g.get("split", "")
    if split and name_split and name_split != split:
        raise DcaseNameError(f"{name}: the name says {name_split!r} but the file is in the {split!r} folder")
    clip = DcaseClip(machine=machine, section=g["section"], split=split or name_split,
                     index=g["index"], domain=g.get("domain", ""), label=g.get("label", ""), kind=g.get("kind", ""))
    if clip.kind == "normal":
        clip.label = "normal"
    attrs = g.get("attrs", "")
    if attrs == NO_ATTRIBUTE or attrs.endswith("_" + NO_ATTRIBUTE):
        clip.attributes_hidden = True
    elif attrs:
        tokens = attrs.split("_")
        # odd token counts (a value with "_" in it) keep the raw text; attributes_XX.csv then decides
        clip.attributes = dict(zip(tokens[0::2], tokens[1::2])) if len(tokens) % 2 == 0 else {RAW: attrs}
    return clip


def clip_attributes(clip: DcaseClip, year: int) -> dict[str, str]:
    """The Row attributes for a clip: the machine's attributes plus the ``dcase.*`` keys."""
    out = dict(clip.attributes)
    out.update({"dcase.machine": clip.machine, "dcase.section": clip.section, "dcase.index": clip.index,
                "dcase.year": str(year)})
    if clip.attributes_hidden:
        out["dcase.hidden"] = "attributes"
    if clip.kind:
        out["dcase.kind"] = clip.kind
    return out


def dcase_clip(row: Row) -> DcaseClip:
    """The typed DCASE view of a row made by :func:`read_dcase`."""
    a = row.attributes
    if "dcase.machine" not in a:
        raise DataError(f"{row.id}: not a DCASE row (no 'dcase.machine' attribute; read it with read_dcase)")
    return DcaseClip(machine=a["dcase.machine"], section=a["dcase.section"], split=row.split,
                     index=a["dcase.index"], domain=row.domain, label=row.labels[0] if row.labels else "",
                     attributes={k: v for k, v in a.items() if not k.startswith("dcase.")},
                     attributes_hidden=a.get("dcase.hidden") == "attributes", kind=a.get("dcase.kind", ""))


def _is_machine_dir(p: Path) -> bool:
    return any((p / s).is_dir() for s in SPLIT_FOLDERS)


def machine_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """The machine-type folders of a dataset root (the root itself when it is one)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected a DCASE machine-type folder or a folder of them)")
    if _is_machine_dir(root):
        return [root]
    found = sorted(c for c in root.iterdir() if c.is_dir() and _is_machine_dir(c))
    if not found:
        raise DataError(f"{root}: no DCASE machine-type folder (one with train/, test/, source_test/ or "
                        "target_test/) here or one level below")
    return found


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def detect_year(root: str | os.PathLike[str]) -> int:
    """Guess the layout year from folders and names.

    2021: ``source_test/``/``target_test/`` folders; 2020: ``id_XX_`` names; 2025: a
    ``supplemental/`` folder; 2022: a section other than 00 or an ``attributes_0X.csv`` with
    X > 0; 2024: ``_noAttribute`` names or numbering that starts at 0001; otherwise 2023.
    2023 and 2025 without supplemental data are the same layout, so 2023 is returned for both.
    Pass ``year=`` to :func:`read_dcase` when you know better.
    """
    dirs = machine_dirs(root)
    names: list[str] = []
    for d in dirs:
        if (d / "source_test").is_dir() or (d / "target_test").is_dir():
            return 2021
        if (d / "supplemental").is_dir():
            return 2025
        if any(re.fullmatch(r"attributes_0[1-9]\.csv", c.name) for c in d.iterdir()):
            return 2022
        for s in ("train", "test"):
            if (d / s).is_dir():
                names.extend(p.stem for p in _audio_files(d / s))
    if not names:
        raise DataError(f"{root}: no audio files in the machine-type folders")
    if any(re.match(r"((normal|anomaly)_)?id_\d\d_\d{8}$", n) for n in names):
        return 2020
    sections = {m.group(1) for n in names if (m := re.match(r"section_(\d\d)_", n))}
    if sections - {"00"}:
        return 2022
    if any(n.endswith("_" + NO_ATTRIBUTE) for n in names):
        return 2024
    index = re.compile(r"section_\d\d_(?:(?:source|target)_(?:train|test)_(?:normal|anomaly)_)?(\d{4})(?:_|$)")
    indices = [int(m.group(1)) for n in names if (m := index.match(n))]
    if indices and min(indices) == 1:
        return 2024
    return 2023


def _read_attribute_csvs(d: Path) -> dict[str, dict[str, str]]:
    """``attributes_XX.csv`` rows by file basename: {"d1p": "mdl", "d1v": "x"} → {"mdl": "x"}."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(d.glob("attributes_*.csv")):
        with f.open(newline="") as fh:
            for rec in csv.DictReader(fh):
                name = (rec.get("file_name") or "").strip()
                if not name:
                    continue
                attrs = {}
                for k, v in rec.items():
                    if k and re.fullmatch(r"d\d+p", k) and v and v != NO_ATTRIBUTE:
                        attrs[v] = rec.get(k[:-1] + "v") or ""
                out[Path(name).name] = attrs
    return out


def read_dcase(root: str | os.PathLike[str], year: int | None = None,
               ground_truth: str | os.PathLike[str] | None = None,
               machines: list[str] | None = None) -> list[Row]:
    """Rows for every clip under a DCASE root (one machine-type folder or a folder of them).

    ``year`` overrides :func:`detect_year`. ``ground_truth`` (a file or folder, see
    :func:`read_ground_truth`) fills in the domain, label and attributes that evaluation-set
    names hide; where names already show them, disagreements are errors. Attributes missing from
    a name (or ``_noAttribute``) are taken from ``attributes_XX.csv`` when it lists them. Every
    file name that does not parse is reported at once. Row ids are ``<machine>/<folder>/<file>``.
    """
    dirs = machine_dirs(root)
    if machines:
        unknown = sorted(set(machines) - {d.name for d in dirs})
        if unknown:
            raise DataError(f"{root}: no machine type {unknown}; found {[d.name for d in dirs]}")
        dirs = [d for d in dirs if d.name in machines]
    yr = year if year is not None else detect_year(root)
    truth = read_ground_truth(ground_truth, default_machine=dirs[0].name if len(dirs) == 1 else "") \
        if ground_truth is not None else {}
    truth_machines = {m for m, _ in truth}
    rows: list[Row] = []
    errors: list[str] = []
    conflicts: list[str] = []
    for d in dirs:
        csv_attrs = _read_attribute_csvs(d)
        for folder, (split, folder_domain) in SPLIT_FOLDERS.items():
            if not (d / folder).is_dir():
                continue
            for f in _audio_files(d / folder):
                try:
                    clip = parse_name(f.name, yr, machine=d.name, split=split)
                except DcaseNameError as e:
                    errors.append(f"{d.name}/{folder}/{e.reason}")
                    continue
                if folder_domain and clip.domain and folder_domain != clip.domain:
                    errors.append(f"{d.name}/{folder}/{f.name}: the name says {clip.domain!r}, the folder {folder!r}")
                    continue
                clip.domain = clip.domain or folder_domain
                gt = truth.get((d.name, f.name)) or truth.get((d.name, f.stem))
                if gt is None and split == "test" and d.name in truth_machines and not clip.label:
                    conflicts.append(f"{d.name}/{folder}/{f.name}: hidden label and no ground-truth entry")
                    continue
                if gt is not None:
                    problem = _apply_truth(clip, gt, yr)
                    if problem:
                        conflicts.append(f"{d.name}/{folder}/{f.name}: {problem}")
                        continue
                if (not clip.attributes or RAW in clip.attributes) and csv_attrs.get(f.name):
                    clip.attributes = csv_attrs[f.name]
                    clip.attributes_hidden = False
                rows.append(Row(path=str(f), id=f"{d.name}/{folder}/{f.name}",
                                labels=[clip.label] if clip.label else [], split=clip.split,
                                domain=clip.domain, attributes=clip_attributes(clip, yr)))
    if errors:
        raise DcaseNameError(f"{root}: {len(errors)} file name(s) do not fit the DCASE {yr} layout (expected "
                             f"{EXPECTED[yr]}; pass year= if the layout was mis-detected):\n  {_listing(errors)}")
    if conflicts:
        raise DcaseNameError(f"{root}: {len(conflicts)} file(s) disagree with the ground truth "
                             f"{ground_truth}:\n  {_listing(conflicts)}")
    if not rows:
        raise DataError(f"{root}: no audio files in {', '.join(SPLIT_FOLDERS)} of the machine-type folders")
    return rows


def _listing(items: list[str], limit: int = 50) -> str:
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n  ".join(items[:limit]) + more


def _apply_truth(clip: DcaseClip, gt: GroundTruth, year: int) -> str:
    """Fill hidden fields of ``clip`` from ground truth; a disagreement is returned as text."""
    if gt.name:
        try:
            full = parse_name(gt.name, year, machine=clip.machine, split=clip.split)
        except DcaseNameError as e:
            return f"ground-truth name: {e}"
        gt = GroundTruth(label=gt.label or full.label, domain=gt.domain or full.domain, name=gt.name)
        if not clip.attributes and not clip.attributes_hidden:
            clip.attributes, clip.attributes_hidden = full.attributes, full.attributes_hidden
    for fld in ("label", "domain"):
        known, given = getattr(clip, fld), getattr(gt, fld)
        if known and given and known != given:
            return f"the name says {fld} {known!r}, the ground truth {given!r}"
        if given:
            setattr(clip, fld, given)
    return ""


__all__ = ["EXPECTED", "YEARS", "DcaseClip", "DcaseNameError", "GroundTruth", "clip_attributes", "dcase_clip",
           "detect_year", "machine_dirs", "parse_name", "read_dcase", "read_ground_truth"]
