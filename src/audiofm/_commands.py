"""What every ``audiofm`` sub-command module shares: one-line errors and a stand-alone entry."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any


def guarded(name: str, fn: Callable[[], int], errors: tuple[type[BaseException], ...] = (),
            on_interrupt: str = "") -> int:
    """Run ``fn``; expected failures (ValueError and its audiofm subclasses, OSError,
    ImportError, KeyError, ``errors``) print ``audiofm NAME: error: ...`` and return 2, an
    interrupt returns 130 (saying ``on_interrupt``, e.g. what was kept). ``AUDIOFM_DEBUG=1``
    lets them raise with a traceback."""
    if os.environ.get("AUDIOFM_DEBUG"):
        return fn()
    expected: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, *errors)
    try:
        return fn()
    except expected as e:  # ConfigError, DataError, CheckpointError, ...
        print(f"audiofm {name}: error: {str(e) or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyError as e:  # unknown peer / preset names
        print(f"audiofm {name}: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"audiofm {name}: interrupted{on_interrupt}", file=sys.stderr)
        return 130


def standalone_main(add_parsers: Callable[[Any], None], argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with only the sub-commands ``add_parsers`` registers and run the chosen one."""
    parser = argparse.ArgumentParser(prog="audiofm")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
