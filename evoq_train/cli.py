"""``evoq-train``: the training plane's command line.

Exit codes as ``evoq-data``: 0 success, 1 a user or data error (one line on stderr),
2 a usage error (Typer). Run it under ``accelerate launch`` for several processes or DeepSpeed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from evoq_data.cli.app import make_app, run_main
from evoq_data.cli.options import Quiet
from evoq_data.core.errors import EvoqError

app = make_app("evoq-train",
               "Self-evolve a VLM quality judge with GRPO on an evoq pseudo-preference dataset.")


@app.command("grpo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def grpo_cmd(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Hub dataset id, folder from `evoq-data push --local-dir`, or PREFS_DIR.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Policy to start from: Hub id or checkpoint folder.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", help="Where checkpoints, the final model and its card go.")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Dataset version on the Hub (tag such as v1, branch or commit).")] = None,
    config: Annotated[str | None, typer.Option("--config", help="Recipe: a YAML file or a shipped recipe name (qwen2.5-vl-7b-8xa100, qwen2.5-vl-7b-1gpu, cpu-smoke).")] = None,
    resume_from_checkpoint: Annotated[str | None, typer.Option("--resume-from-checkpoint", help="A checkpoint-N folder to resume from (or 'true' for the latest in --output-dir).")] = None,
    use_vllm: Annotated[bool | None, typer.Option("--use-vllm/--no-vllm", help="Generate with vLLM in colocate mode (GPU).")] = None,
    quiet: Quiet = False,
) -> None:
    """Train with GRPO and the Thurstone fidelity reward; write a checkpoint and a model card.

    Any TRL GRPOConfig field or evoq setting can follow as --name value (e.g.
    --max_steps 100 --learning_rate 1e-6); they override the recipe.

    Example: accelerate launch --config_file $(evoq-train recipe-path accelerate/zero3)
    -m evoq_train.cli grpo --config qwen2.5-vl-7b-8xa100 --dataset me/evoq-koniq
    --revision v1 --model Qwen/Qwen2.5-VL-7B-Instruct --output-dir runs/evo-r1
    """
    from .settings import hide_vllm_unless_used, load_recipe, parse_overrides

    settings = load_recipe(config) if config else {}
    settings.update(parse_overrides(list(ctx.args)))
    given = {"dataset": dataset, "model": model, "dataset_revision": revision,
             "output_dir": str(output_dir) if output_dir else None,
             "resume_from_checkpoint": resume_from_checkpoint, "use_vllm": use_vllm}
    settings.update({k: v for k, v in given.items() if v is not None})
    if settings.get("resume_from_checkpoint") in ("true", "True"):
        settings["resume_from_checkpoint"] = True
    if settings.get("use_vllm"):
        settings.setdefault("vllm_mode", "colocate")
    hide_vllm_unless_used(settings)

    from .trainer import run_grpo

    # Trainer logs and prints go to stderr; stdout carries only the summary.
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_grpo(settings, quiet=quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary, from the main process
        typer.echo(json.dumps(summary, indent=2, default=str))


@app.command("recipe-path")
def recipe_path_cmd(
    name: Annotated[str, typer.Argument(help="Recipe or launcher config, e.g. accelerate/zero3.")],
) -> None:
    """Print the path of a shipped recipe or accelerate config (for accelerate --config_file).

    Example: evoq-train recipe-path accelerate/zero3
    """
    from .settings import recipes_dir

    root = recipes_dir()
    path = root / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
        raise EvoqError(f"no recipe {name!r}; shipped: {', '.join(names)}")
    typer.echo(str(path))


# --- the self-evolution loop (evoq_train/evolve/) ---
from evoq_train.evolve.cli import evolve_cmd, lineage_cmd  # noqa: E402

app.command("evolve")(evolve_cmd)
app.command("lineage")(lineage_cmd)


def main() -> None:
    """Console entry point: EvoqError -> one line on stderr and exit code 1."""
    run_main(app)


if __name__ == "__main__":
    main()
