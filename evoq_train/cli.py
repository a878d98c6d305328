"""``evoq-train``: the training plane's command line.

Exit codes as ``evoq-data``: 0 success, 1 a user or data error (one line on stderr; for
``grpo`` also a bad or unknown option), 2 a usage error of the other commands (Typer). Run it
under ``accelerate launch`` for several processes or DeepSpeed.

Adding a subcommand: decorate a function with ``@app.command("name")`` here (Typer options),
or, for a command in its own package, define it there as ``def cmd(...)`` and register it
with ``app.command("name")(cmd)`` below the existing ones; a command that parses its own
arguments takes ``ctx: typer.Context`` and ``context_settings=RAW_ARGS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Annotated

import typer

from evoq_data.cli.app import make_app, run_main

app = make_app("evoq-train",
               "Self-evolve a VLM quality judge with GRPO on an evoq pseudo-preference dataset.")


# Options are TRL's parser's, not Typer's: Typer hands every argument (``--help`` included)
# to trl.TrlParser, whose help lists every GRPOConfig field.
RAW_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command("grpo", context_settings=RAW_ARGS)
def grpo_cmd(ctx: typer.Context) -> None:
    """Train with GRPO and the fidelity reward (evoq-train grpo --help: every GRPOConfig field).

    Typer passes every argument to TRL's parser (``evoq_train.config.parse_grpo_args``).
    """
    from .config import hide_vllm_unless_used, parse_grpo_args

    args = parse_grpo_args(list(ctx.args))
    hide_vllm_unless_used(args.training.use_vllm)

    from .trainer import run_grpo

    # Trainer logs and prints go to stderr; stdout carries only the summary.
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_grpo(args)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, from the main process
        typer.echo(json.dumps(summary, indent=2, default=str))
    _close_process_group()


def _close_process_group() -> None:
    """Destroy torch.distributed's process group once every rank has finished training.
    Left to interpreter shutdown, a gloo group's threads can abort a rank after a finished run
    ("terminate called without an active exception", exit -6 under accelerate launch)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@app.command("recipe-path")
def recipe_path_cmd(
    name: Annotated[str, typer.Argument(help="Recipe or launcher config, e.g. accelerate/zero3.")],
) -> None:
    """Print the path of a shipped recipe or accelerate config (for accelerate --config_file).

    Example: evoq-train recipe-path accelerate/zero3
    """
    from .recipes import resolve_recipe

    typer.echo(str(resolve_recipe(name, scope="any", files=False)))


# --- the self-evolution loop (evoq_train/evolve/) ---
from evoq_train.evolve.cli import evolve_cmd, lineage_cmd  # noqa: E402

app.command("evolve")(evolve_cmd)
app.command("lineage")(lineage_cmd)


def main() -> None:
    """Console entry point: EvoqError -> one line on stderr and exit code 1."""
    run_main(app)


if __name__ == "__main__":
    main()
