"""The one project error type.

Every user or data error raises :class:`EvoqError` with a message that fits on one line and
says the cause (and, where there is one, the fix). The CLIs print it to stderr and exit 1.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class EvoqError(Exception):
    """A user or data error: printed as one line on stderr, exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def require(module: str, extra: str) -> ModuleType:
    """Import a heavy optional dependency, or fail naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EvoqError(
            f"this needs the '{module}' package ({exc.__class__.__name__}: {exc}); "
            f"install it with: pip install 'evoq[{extra}]'"
        ) from exc


def main_or_exit(main) -> None:
    """Run a ``python -m`` module's ``main()``: an :class:`EvoqError` becomes one line on
    stderr and exit code 1, as in the evoq commands (the typer apps: ``cli.app.run_main``)."""
    try:
        main()
    except EvoqError as exc:
        raise SystemExit(f"error: {exc}") from None
