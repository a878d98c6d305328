"""``evoq-data``: the data plane's command line.

:mod:`evoq_data.cli.app` builds the Typer app and the entry point, :mod:`evoq_data.cli.options`
holds the shared options, :mod:`evoq_data.cli.commands` the commands (one per stage).
"""

from evoq_data.cli.app import make_app, run_main
from evoq_data.cli.commands import app


def main() -> None:
    """Console entry point: EvoqError -> one line on stderr and exit code 1."""
    run_main(app)


__all__ = ["app", "main", "make_app", "run_main"]
