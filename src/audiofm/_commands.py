"""What every ``audiofm`` sub-command shares: ``--config`` / ``--set`` and their resolution into a
typed config, help that shows the config's defaults, the one error guard, a stand-alone entry.

Settings resolve as: the config class's defaults < ``--config FILE`` (YAML) < flags given on the
command line (unset flags are None and dropped) < ``--set key.sub=value`` (repeatable), all
through :func:`audiofm.config.from_dict`, so a value is typed and checked the same way wherever
it comes from.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def block_count(text: str) -> int:
    """argparse type of ``--layers``: a block count, or 'all' (stored as 0: every block up to
    ``--layer``)."""
    if text.strip().lower() == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or 'all', got {text!r}") from None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config YAML`` and ``--set KEY=VALUE`` (repeatable) to a sub-command's parser."""
    parser.add_argument("--config", metavar="YAML",
                        help="YAML file of this command's config fields (see the config class named above); "
                             "flags and --set override it (default: none)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field, dotted for nested sections, value parsed as YAML and "
                             "checked against the field's type, e.g. --set train.lr=3e-4; repeatable, applied "
                             "last (default: none)")


def resolve_config(cls: type[T], args: argparse.Namespace, flags: Mapping[str, Any], *,
                   required: Mapping[str, str] | None = None, nulls: Iterable[str] = (),
                   check: Callable[[dict[str, Any]], list[str]] | None = None,
                   base: Mapping[str, Any] | None = None) -> T:
    """``cls`` from its defaults < ``base`` (e.g. the saved settings of a run being resumed) <
    ``args.config`` (YAML) < ``flags`` (nested; None values dropped) < ``args.set`` overrides,
    typed and checked by :func:`~audiofm.config.from_dict`.

    ``required`` maps dotted keys that must end up non-empty to the flag that sets them
    (``{"data.source": "--data"}``); ``nulls`` are dotted keys set to None after the flags (e.g.
    ``epochs`` when ``--max-steps`` replaces it); ``check(merged mapping)`` returns further
    problems (e.g. of a model config the settings name). Every problem is reported in one
    ConfigError."""
    from .config import ConfigError, drop_none, from_dict, load_yaml, merge, parse_overrides

    data: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        data = merge(data, load_yaml(args.config))
    data = merge(data, drop_none(dict(flags)))
    for key in nulls:
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = None
    data = merge(data, parse_overrides(list(getattr(args, "set", None) or [])))
    missing = [f"{flag} is required (or {key} in --config)" for key, flag in (required or {}).items()
               if not _get(data, key)]
    if check is not None:
        missing += check(data)
    try:
        cfg = from_dict(cls, data, where="")
    except ConfigError as e:
        raise ConfigError.of(missing + e.problems) from None
    if missing:
        raise ConfigError.of(missing)
    return cfg


def _get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for p in key.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--allow-change KEY`` of a training command (see docs/reliability.md)."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint with its saved settings; "
                             "options given as well must not change the run (default: off)")
    parser.add_argument("--allow-change", action="append", default=[], metavar="KEY[,KEY]",
                        help="with --resume: let these dotted settings (or sections, e.g. train.max_steps, "
                             "train) differ from the saved run; the change is recorded in run_config.yaml "
                             "(repeatable) (default: none)")


def resume_base(args: argparse.Namespace, cls: type) -> dict[str, Any] | None:
    """The saved settings of the run in ``args.out`` when ``args.resume`` (the base the given
    options apply to), else None; ``--allow-change`` without ``--resume`` is refused."""
    from .config import ConfigError

    if not args.resume:
        if args.allow_change:
            raise ConfigError("--allow-change only applies with --resume")
        return None
    from .train.checkpointing import saved_settings

    return saved_settings(args.out, cls)


def allowed_changes(args: argparse.Namespace) -> list[str]:
    """The dotted keys of ``--allow-change`` (repeatable, comma-separated)."""
    return [k.strip() for item in args.allow_change for k in item.split(",") if k.strip()]


def config_defaults(target: str) -> type[argparse.HelpFormatter]:
    """A help formatter that fills ``{key.sub}`` in option help with the default of that field of
    config class ``target`` (``"module:Class"``), imported only when help is shown — so help
    states the defaults the config really has and ``audiofm`` starts fast."""

    class Formatter(argparse.HelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = super()._get_help_string(action)
            if text and "{" in text:
                text = re.sub(r"\{(@?[A-Za-z_][\w.:]*)\}", lambda m: _default_text(target, m.group(1)), text)
            return text

    return Formatter


def _default_text(target: str, key: str) -> str:
    from .config import to_dict

    if key.startswith("@"):  # a constant elsewhere, "@module:NAME" (e.g. the pooling names)
        module, _, name = key[1:].partition(":")
        return ", ".join(str(v) for v in getattr(importlib.import_module(module), name))
    module, _, name = target.partition(":")
    value: Any = to_dict(getattr(importlib.import_module(module), name)())
    for p in key.split("."):
        value = value[p]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_default_text_value(v) for v in value) or "none"
    return str(value)


def _default_text_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def guarded(name: str, fn: Callable[[], int], errors: tuple[type[BaseException], ...] = (),
            on_interrupt: str = "") -> int:
    """Run ``fn``, the one error guard of every sub-command: expected failures (ValueError and its
    audiofm subclasses — ConfigError, DataError, CheckpointError, ... —, OSError, ImportError,
    KeyError, ``errors``) print one line ``audiofm NAME: error: ...`` and return 2; Ctrl-C
    returns 130 (saying ``on_interrupt``, e.g. what was kept). ``AUDIOFM_DEBUG=1`` lets them
    raise with a traceback."""
    if os.environ.get("AUDIOFM_DEBUG"):
        return int(fn())
    expected: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, *errors)
    try:
        return int(fn())
    except expected as e:
        print(f"audiofm {name}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyError as e:  # unknown peer / preset / backbone names
        print(f"audiofm {name}: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"audiofm {name}: interrupted{on_interrupt}", file=sys.stderr)
        return 130


#: errnos that only a write raises: shown as "PATH: cannot write: CAUSE" wherever they come from
_WRITE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _message(e: BaseException) -> str:
    """One line for ``e``; write failures (:class:`audiofm.io.WriteError`, or an OS error only a
    write raises) name the path and the cause."""
    from .io import CAUSES, WriteError

    if isinstance(e, OSError) and not isinstance(e, WriteError) and e.filename and e.errno in _WRITE_ONLY:
        return str(WriteError(e.filename, CAUSES[e.errno], e.errno, unchanged=False))
    if isinstance(e, WriteError):
        return str(e)
    if isinstance(e, OSError) and e.strerror and not str(e).startswith(e.strerror):
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def command(name: str, run: Callable[[argparse.Namespace], int], errors: tuple[type[BaseException], ...] = (),
            on_interrupt: str = "") -> Callable[[argparse.Namespace], int]:
    """``func`` for ``set_defaults``: runs ``run(args)`` inside :func:`guarded` as command ``name``."""

    def func(args: argparse.Namespace) -> int:
        return guarded(name, lambda: run(args), errors, on_interrupt)

    func.__name__ = f"cmd_{name.replace('-', '_')}"
    func.__doc__ = run.__doc__
    return func


def standalone_main(add_parsers: Callable[[Any], None], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with only the sub-commands ``add_parsers`` registers and run the chosen one."""
    parser = argparse.ArgumentParser(prog="audiofm")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
