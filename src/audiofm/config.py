"""Typed dataclass configs: to/from plain dicts, YAML files, and ``key.sub=value`` overrides.

:func:`from_dict` is the one way a mapping (YAML file, ``--set`` overrides, a checkpoint's
``config.json``) becomes a config: every value is coerced to and checked against its field's
annotation, every problem is collected, and one :class:`ConfigError` names each dotted key, the
value given and what is accepted. The dataclasses' own ``__post_init__`` checks then run (their
errors are collected too, one per nested config).

Valid ranges are declared once, in the annotation: ``lr: PositiveFloat = 5e-4`` or
``dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0`` (also inside containers and unions,
``tuple[PositiveFloat, ...]``, ``PositiveInt | None``). :func:`from_dict` checks them with the
types, before the dataclass is built, so an out-of-range value is reported with every other
problem as ``key: got -1.0, expected a number > 0``; :func:`check_ranges` applies the same
declarations to an instance built directly (the configs' ``__post_init__`` call it first).

A field whose concrete config class depends on a sibling value (an encoder's ``backbone_cfg``
is the config of its ``backbone``) names a resolver in its metadata:
``field(..., metadata={TYPE_FROM: fn})`` with ``fn(data: Mapping) -> type``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml

T = TypeVar("T")

#: field-metadata key: ``fn(raw mapping of the enclosing config) -> the field's dataclass type``
TYPE_FROM = "audiofm_type_from"

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclasses.dataclass(frozen=True)
class Range:
    """The accepted interval of a numeric field, used as ``Annotated[float, Range(gt=0)]``:
    ``ge``/``gt`` lower bound (inclusive / exclusive), ``le``/``lt`` upper bound."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return True  # not a number: the type check reports it
        if isinstance(value, float) and math.isnan(value):
            return False
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def describe(self) -> str:
        """``"> 0"``, ``"≥ 1"``, ``"in [0, 1)"``."""
        lo = (f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None)
        hi = (f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return ("≥ " if lo[0] == "[" else "> ") + lo[1:]
        if hi:
            return ("≤ " if hi[-1] == "]" else "< ") + hi[:-1]
        return "any value"


def _num(x: float) -> str:
    return f"{x:g}"


#: common ranges, declared in annotations (``batch_size: PositiveInt = 32``)
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
#: a rate such as dropout: in [0, 1)
Rate = Annotated[float, Range(ge=0, lt=1)]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names every bad key and why.

    ``problems`` lists them one by one as ``"key: what is wrong"``."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        """One error for all ``problems``, on one line."""
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
        return cls(head, list(problems))


class _Invalid(Exception):
    """One value does not fit its annotation (internal; collected into a ConfigError)."""


def to_dict(obj: Any) -> Any:
    """Dataclasses (nested) → plain dicts/lists, suitable for JSON/YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    """What an annotation accepts, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        ranges = [m.describe() for m in tp.__metadata__ if isinstance(m, Range)]
        return " ".join([_type_name(args[0]), *ranges])
    if tp is Any:
        return "any value"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return f"a mapping of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    name = _type_name(tp)
    for article in ("an ", "a "):
        if name.startswith(article):
            return name[len(article):] + "s"
    return name


def _coerce(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as annotation ``tp``; nested problems are appended to ``problems``; a problem
    of this value itself raises :class:`_Invalid`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        out = _coerce(args[0], value, where, problems)
        if not all(m.accepts(out) for m in tp.__metadata__ if isinstance(m, Range)):
            raise _Invalid
        return out
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Invalid
        return _build(tp, value, where, problems)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        if value is None:
            if type(None) in args:
                return None
            raise _Invalid
        for alt in args:
            if alt is type(None):
                continue
            sub: list[str] = []
            try:
                out = _coerce(alt, value, where, sub)
            except _Invalid:
                continue
            problems.extend(sub)
            return out
        raise _Invalid
    if origin is typing.Literal:
        for option in args:
            if value == option and type(value) is type(option):
                return option
        if isinstance(value, str):  # "3" for Literal[3], or a quoted option
            for option in args:
                if str(option) == value:
                    return option
        raise _Invalid
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Invalid
    if tp is int:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise _Invalid from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Invalid
    if tp is float:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 3e-4 (no dot) as a string
                return float(value.strip())
            except ValueError:
                raise _Invalid from None
        raise _Invalid
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric folder or split name read by YAML as a number
        raise _Invalid
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Invalid
    if origin is list or tp is list:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        item = args[0] if args else Any
        return [_item(item, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_item(item, v, f"{where}[{i}]", problems) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Invalid
        return tuple(_item(a, v, f"{where}[{i}]", problems) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Invalid
        kt, vt = args if args else (Any, Any)
        return {_item(kt, k, f"{where}.{k}", problems): _item(vt, v, f"{where}.{k}", problems)
                for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Invalid
    return value  # an annotation this module does not know: passed through unchecked


def _item(tp: Any, value: Any, where: str, problems: list[str]) -> Any:
    """Coerce one element; a bad one becomes a problem (and the element stays as given)."""
    try:
        return _coerce(tp, value, where, problems)
    except _Invalid:
        problems.append(f"{where}: got {_show(value)}, expected {_type_name(tp)}")
        return value


def _build(cls: type, data: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """Instance of dataclass ``cls`` from ``data`` (missing fields keep their defaults; a partial
    mapping for a nested config overlays that field's default instance)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    start = len(problems)
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        problems.append(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; valid keys: "
                        f"{', '.join(sorted(fields))}")
    kw: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        tp = hints.get(name, Any)
        resolver: Callable[[Mapping[str, Any]], type] | None = f.metadata.get(TYPE_FROM)
        key = f"{where}.{name}" if where else name
        if resolver is not None:
            try:
                tp = resolver(data)
            except (KeyError, ValueError) as e:
                problems.append(f"{key}: {e.args[0] if e.args else e}")
                continue
        value = data[name]
        if isinstance(value, Mapping):
            value = {**_custom_defaults(f, tp), **value}
        kw[name] = _item(tp, value, key, problems)
    if len(problems) > start:
        return None
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        message = str(e.args[0]) if e.args else type(e).__name__
        problems.append(f"{where}: {message}" if where else message)
        return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The field annotations of ``cls``, evaluated, with their ``Annotated`` ranges."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except NameError:  # an annotation only importable under TYPE_CHECKING: such fields pass unchecked
        return {}


def _has_range(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        return True
    return any(_has_range(a) for a in typing.get_args(tp) if a is not Ellipsis)


@functools.cache
def _ranged(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = _hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls)
                 if f.name in hints and _has_range(hints[f.name]))


def range_problems(obj: Any) -> list[str]:
    """``"key: got V, expected ..."`` for every field of dataclass instance ``obj`` whose value
    lies outside the range its annotation declares (see :class:`Range`)."""
    problems: list[str] = []
    for name, tp in _ranged(typing.cast(type, type(obj))):
        _item(tp, getattr(obj, name), name, problems)
    return problems


def check_ranges(obj: Any) -> None:
    """Raise one :class:`ConfigError` listing every out-of-range field of ``obj`` (for configs
    built directly; :func:`from_dict` checks the same declarations while it builds)."""
    problems = range_problems(obj)
    if problems:
        raise ConfigError.of(problems)


def _custom_defaults(f: dataclasses.Field[Any], tp: Any) -> dict[str, Any]:
    """The values in which field ``f``'s default instance differs from a plain ``tp()`` (e.g. a
    fine-tuning config's own training defaults): a partial mapping for that field keeps them."""
    if f.default_factory is not dataclasses.MISSING:
        base = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        base = f.default
    else:
        return {}
    if not (dataclasses.is_dataclass(tp) and type(base) is tp):
        return {}
    try:
        plain = to_dict(tp())
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in to_dict(base).items() if plain.get(k) != v}


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, coercing every value to its field's annotation
    (int, float — also e-notation strings such as ``"3e-4"`` —, bool, str, Literal, ``X | None``,
    ``list[X]``, ``tuple[X, ...]``, fixed tuples, dict, nested dataclasses). Unknown keys, values
    that do not fit and failing ``__post_init__`` checks are all collected into one
    :class:`ConfigError` naming the dotted key, the value and what is accepted."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    problems: list[str] = []
    out = _build(cls, data, where, problems)
    if problems:
        raise ConfigError.of(problems)
    return typing.cast(T, out)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=3e-4", "model.mask_mode=time"]`` → nested dict (values parsed as YAML, then
    typed by :func:`from_dict` like any other value)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r} must look like key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # an unbalanced bracket or quote: keep the text, the field's type decides
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p!r} was already set to a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Nested dict without ``None`` values (and without mappings left empty): unset CLI flags
    must never override config files or presets."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (an empty file is an empty mapping)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({' '.join(str(e).split())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of config fields")
    return data


def save_yaml(data: Any, path: str | os.PathLike[str]) -> None:
    """Write ``data`` (dataclasses allowed) as YAML, atomically."""
    from .io import write_text

    write_text(path, yaml.safe_dump(to_dict(data), sort_keys=False))
