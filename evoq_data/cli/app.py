"""What both evoq command lines share: the Typer app factory and the entry point that turns
an :class:`~evoq_data.core.errors.EvoqError` into one line on stderr and exit code 1.

Exit codes: 0 success, 1 a user or data error (one line on stderr), 2 a usage error (Typer).
Results and paths go to stdout; progress bars and logs to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer

from evoq_data import __version__
from evoq_data.core.errors import EvoqError


def make_app(name: str, help: str) -> typer.Typer:
    """A Typer app with what both evoq command lines share: ``--verbose`` and ``version``."""
    new = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)

    @new.callback()
    def _root(
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    ) -> None:
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    @new.command("version")
    def version_cmd() -> None:
        """Print the evoq version."""
        typer.echo(__version__)

    return new


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanup (locks, engines) runs."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


INTERRUPTED = ("every finished output file is kept (each is written whole, by rename); "
               "rerun the same command to resume where it stopped")


def run_main(app: typer.Typer) -> None:
    """Console entry point: EvoqError -> one line on stderr and exit code 1; Ctrl-C and
    SIGTERM -> one line saying what was kept and how to resume (exit 130 / 143)."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except EvoqError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted (Ctrl-C): {INTERRUPTED}", err=True)
        raise SystemExit(130) from None
    except Terminated:
        typer.echo(f"terminated (SIGTERM): {INTERRUPTED}", err=True)
        raise SystemExit(143) from None


def silence_progress_bars(ctx: typer.Context, param, quiet: bool) -> bool:
    """``--quiet``: no progress bars at all, evoq's nor those of the libraries it drives
    (huggingface_hub downloads, transformers' weight loading, datasets)."""
    if quiet:
        import os

        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["TQDM_DISABLE"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
    return quiet


def emit(summary: dict) -> None:
    """Print a command's result (a dict) as JSON on stdout."""
    typer.echo(json.dumps(summary, indent=2, default=str))
