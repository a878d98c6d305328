"""The ``evoq-train evolve`` and ``evoq-train lineage`` commands (registered on the
``evoq-train`` app in :mod:`evoq_train.cli`). Light to import: the work is in :mod:`.run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evoq_data.cli.app import silence_progress_bars
from evoq_data.cli.fields import dataclass_options

from .config import EvolveSettings


@dataclass_options(EvolveSettings, into="given", layered=True)
def evolve_cmd(
    given: dict,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file setting any of these options by name (the command line wins).")] = None,
) -> None:
    """Run the self-evolution loop for T rounds, resumable anywhere (docs/evolve.md).

    Each round: pairs -> vote (the previous round's model) -> aggregate -> publish version
    round-r -> GRPO -> score + eval. Rerun the same command after a crash to continue; rerunning with other settings into the
    same RUN is refused. Each step is its own process; logs in RUN/logs/.

    Example: evoq-train evolve --pool ./koniq-train --model Qwen/Qwen2.5-VL-7B-Instruct
    --rounds 2 --engine vllm --train-config qwen2.5-vl-7b-8xa100
    --accelerate-config accelerate/zero3 --repo-id me/evoq-koniq --eval koniq=koniq_test.csv
    --run-dir runs/evo
    """
    from .run import run_evolve

    settings = EvolveSettings.build(config, given)
    silence_progress_bars(None, None, settings.quiet)  # --quiet, or quiet: true in --config
    typer.echo(json.dumps(run_evolve(settings, quiet=settings.quiet), indent=2, default=str))


def lineage_cmd(
    run_dir: Annotated[Path, typer.Argument(help="RUN folder of `evoq-train evolve`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print lineage.json instead of the table.")] = False,
) -> None:
    """Print which model voted each dataset version and what each model was trained from.

    Example: evoq-train lineage runs/evo
    """
    from .lineage import lineage_table, read_lineage

    doc = read_lineage(run_dir)
    typer.echo(json.dumps(doc, indent=2) if as_json else lineage_table(doc), nl=as_json)
