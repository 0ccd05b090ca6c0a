"""The `lookout` command line: `main` is the entry point.

The commands live in modules of their own (`commands`, `pubsub`, ...) that import the shared
`app` from `worker.cli.app`; importing them here registers them, so no CLI module imports
another's commands and there is no import circle.
"""

from __future__ import annotations

import os
import select
import sys

# before anything loads numpy: it sizes BLAS's thread pools (see worker/cpu_tuning.py)
from worker.cpu_tuning import collect_garbage_less_often, limit_blas_threads

# isort: split
# the demo registers first, so `lookout --help` lists it first ("Start with `lookout demo`")
from worker.cli import demo as _demo  # noqa: F401  (registers the command)

# isort: split
from worker.cli import baseline as _baseline  # noqa: F401  (registers the commands)
from worker.cli import bq as _bq  # noqa: F401  (registers the commands)
from worker.cli import commands as _commands  # noqa: F401  (registers the commands)
from worker.cli import pubsub as _pubsub  # noqa: F401  (registers the commands)
from worker.cli import retune as _retune  # noqa: F401  (registers the commands)
from worker.cli import sql as _sql  # noqa: F401  (registers the command)
from worker.cli.app import app, fit_help_to_terminal
from worker.cli.log_format import fatal

__all__ = ["app", "limit_blas_threads", "main"]


#: the options of `lookout` itself, which click reads only before the command
GLOBAL_OPTIONS = ("--log-format", "--log-level")


def global_options_first(args: list[str]) -> list[str]:
    """`lookout replay f --log-format json` as `lookout --log-format json replay f`: after the
    command click answered "No such option: --log-format (Possible options: --format)", which
    points at the wire format. Nothing after a `--` is touched."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_next = "=" not in arg and i + 1 < len(args)
            moved.extend(args[i : i + 2] if takes_next else [arg])
            i += 2 if takes_next else 1
            continue
        rest.append(arg)
        i += 1
    return moved + rest


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def main() -> None:
    """Entry point: never a traceback for the user unless LOOKOUT_DEBUG=1 asks for one."""
    limit_blas_threads()
    collect_garbage_less_often()
    fit_help_to_terminal()
    try:
        app(args=global_options_first(sys.argv[1:]), standalone_mode=True)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        from worker.cli.app import quiet_broken_pipe

        quiet_broken_pipe()
    except SystemExit as stopped:
        # typer exits 1 on a broken pipe it caught itself (`config check | head -1`), having
        # wrapped stdout to say nothing more: the same "not an error" as everywhere else
        # (and only stdout's: not a broken pipe of a socket or a child process)
        wrapped = type(sys.stdout).__name__ == "PacifyFlushWrapper"
        if stopped.code == 1 and wrapped and _stdout_reader_gone():
            raise SystemExit(0) from None
        raise
    except Exception as error:
        if os.environ.get("LOOKOUT_DEBUG") == "1":
            raise
        name = type(error).__name__
        # one line: DuckDB's errors add paragraphs of advice (SET threads=X) meant for its shell
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if name == "OutOfMemoryException":  # DuckDB's, within the sink's own limit
            text += "; raise sink.memory_limit, the DuckDB sink's memory"
        fatal(f"{name}: {text} (set LOOKOUT_DEBUG=1 for a traceback)")
        raise SystemExit(1) from None
