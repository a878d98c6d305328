"""``evoq-train grpo --resume-from-checkpoint`` in one plain process: a run stopped after its
first checkpoint and resumed ends with the weights of the run that was never stopped, and a
run resumed from its last checkpoint takes no step past max_steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.cli import assert_user_error
from fixtures.push import make_prefs_dir
from fixtures.train import assert_same_weights, checkpoints, read_weights
from typer.testing import CliRunner

pytest.importorskip("trl")

MAX_STEPS = 3  # 4 pairs, 2 per step: 2 steps an epoch, so the last checkpoint ends mid-epoch


def invoke(prefs: Path, model: Path, out: Path, *extra: str):
    from evoq_train.cli import app

    return CliRunner().invoke(app, [
        "grpo", "--config", "cpu-smoke", "--dataset", str(prefs), "--model", str(model),
        "--output-dir", str(out), "--max_steps", str(MAX_STEPS), "--save_strategy", "steps",
        "--save_steps", "1", "--quiet", *extra])


def grpo(prefs: Path, model: Path, out: Path, *extra: str) -> dict:
    result = invoke(prefs, model, out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def prefs(tmp_path_factory) -> Path:
    return make_prefs_dir(tmp_path_factory.mktemp("resume") / "run")


@pytest.fixture(scope="module")
def uninterrupted(prefs, tiny_vlm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    assert grpo(prefs, tiny_vlm, out)["global_steps"] == MAX_STEPS
    assert checkpoints(out) == [f"checkpoint-{s}" for s in range(1, MAX_STEPS + 1)]
    return out


def stopped_after(uninterrupted: Path, step: int, out: Path) -> Path:
    """What a run killed after its checkpoint ``step`` leaves: that checkpoint alone (the same
    seed writes the same checkpoint whatever happens after it)."""
    out.mkdir(parents=True)
    shutil.copytree(uninterrupted / f"checkpoint-{step}", out / f"checkpoint-{step}")
    return out


def losses(out: Path, step: int) -> dict:
    state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def test_resumed_after_checkpoint_1_ends_with_the_uninterrupted_weights(
        prefs, tiny_vlm, uninterrupted, tmp_path):
    out = stopped_after(uninterrupted, 1, tmp_path / "out")
    summary = grpo(prefs, tiny_vlm, out, "--resume-from-checkpoint", "true")

    assert summary["global_steps"] == MAX_STEPS
    assert checkpoints(out) == checkpoints(uninterrupted)
    # The checkpoint's weights were loaded: each later step, and the end, as never stopped.
    for step in range(2, MAX_STEPS + 1):
        assert_same_weights(out / f"checkpoint-{step}", uninterrupted / f"checkpoint-{step}")
    assert_same_weights(out, uninterrupted)
    assert losses(out, MAX_STEPS) == pytest.approx(losses(uninterrupted, MAX_STEPS), abs=1e-6)
    # ... and training moved them: the test could tell a resume from the parent's weights.
    start = read_weights(tiny_vlm)
    assert any((start[k] != w).any() for k, w in read_weights(out).items())


def test_resumed_from_the_last_checkpoint_takes_no_step(prefs, tiny_vlm, uninterrupted,
                                                         tmp_path):
    out = stopped_after(uninterrupted, MAX_STEPS, tmp_path / "out")
    summary = grpo(prefs, tiny_vlm, out, "--resume-from-checkpoint", "true")

    assert summary["global_steps"] == MAX_STEPS
    assert summary["train_loss"] is None  # no step taken, no loss to report
    assert checkpoints(out) == [f"checkpoint-{MAX_STEPS}"]
    assert_same_weights(out, uninterrupted)
    lineage = json.loads((out / "evoq_train.json").read_text())
    assert (lineage["global_steps"], lineage["train_loss"]) == (MAX_STEPS, None)


def test_a_checkpoint_that_does_not_fit_is_refused(prefs, tiny_vlm, uninterrupted, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = stopped_after(uninterrupted, 1, tmp_path / "out") / "checkpoint-1"
    weights = load_file(ckpt / "model.safetensors")
    del weights["model.norm.weight"]
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    assert_user_error(invoke(prefs, tiny_vlm, tmp_path / "out", "--resume-from-checkpoint",
                             str(ckpt)),
                      f"--resume-from-checkpoint {ckpt}: its weights do not fit the model",
                      "missing keys: model.language_model.norm.weight")


def test_a_checkpoint_without_trainer_state_is_refused(prefs, tiny_vlm, uninterrupted,
                                                       tmp_path):
    ckpt = stopped_after(uninterrupted, 1, tmp_path / "out") / "checkpoint-1"
    (ckpt / "trainer_state.json").unlink()
    assert_user_error(invoke(prefs, tiny_vlm, tmp_path / "out", "--resume-from-checkpoint",
                             str(ckpt)), f"{ckpt} has no trainer_state.json")
