"""The plan of an evolve run, without a model: the step order and the exact command line of
every step of a two-round run (bootstrap judge, synthetic pairs, eval), built from settings
and the layout alone; and the layout as the one owner of the run's paths and step names."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path

import pytest

from evoq_train.evolve.config import EvolveSettings
from evoq_train.evolve.context import RunContext, Sources
from evoq_train.evolve.layout import RunLayout
from evoq_train.evolve.steps import build_steps

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DATA = [PY, "-m", "evoq_data.cli"]
TRAIN = [PY, "-m", "evoq_train.cli"]


def seed(what: str, r: int, run_seed: int = 5) -> int:
    """The derived seed, computed here from its definition (sha256, little-endian u64)."""
    digest = hashlib.sha256(f"evoq-evolve:{run_seed}:{what}:{r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def context(**over) -> RunContext:
    settings = EvolveSettings(**{
        "pool": "/data/pool", "model": "/models/tiny", "rounds": 2, "run_dir": "/runs/evo",
        "pairs_per_round": 6, "votes_per_pair": 2, "engine_args": ["dtype=float32"],
        "max_tokens": 8, "vote_args": ["--no-reasoning"], "train_config": "cpu-smoke",
        "train_args": ["max_steps=2"], "evals": ["small=/data/labels.csv"], "score_samples": 2,
        "bootstrap_engine": "piqe", "synthetic_pairs": 20, "seed": 5, **over})
    sources = Sources(pool="../../data/pool", base_model="../../models/tiny",
                      recipe="cpu-smoke", evals=(("small", "../../data/labels.csv"),))
    return RunContext(settings, sources, RunLayout(Path("/runs/evo")))


FACTS = {"synthetic-pairs": {"available": 150}, "grpo": {"resume": False},
         "eval": {"sets": ["small"], "skipped": {}}}


def test_two_round_plan_order_and_every_command():
    steps = build_steps(context())
    assert [s.name for s in steps] == [
        "round-0/eval-images", "round-0/score", "round-0/eval",
        "round-1/pairs", "round-1/vote", "round-1/voted-by", "round-1/aggregate",
        "round-1/push", "round-1/checkpoints", "round-1/grpo", "round-1/score", "round-1/eval",
        "round-2/pairs", "round-2/references", "round-2/distort", "round-2/synthetic-pairs",
        "round-2/mix-pairs", "round-2/vote", "round-2/voted-by", "round-2/aggregate",
        "round-2/push", "round-2/checkpoints", "round-2/grpo", "round-2/score", "round-2/eval"]
    argv = {s.name: s.argv(FACTS.get(s.kind)) for s in steps}
    in_process = {"round-0/eval-images", "round-1/voted-by", "round-1/checkpoints",
                  "round-2/references", "round-2/mix-pairs", "round-2/voted-by",
                  "round-2/checkpoints"}
    assert {n for n, a in argv.items() if a is None} == in_process
    for name in in_process:
        assert next(s for s in steps if s.name == name).work is not None

    def score(r: int, model: str) -> list[str]:
        return [*DATA, "score", "--images", "eval-images", "--samples", "2", "--seed", "5",
                "--max-tokens", "8", "--engine", "transformers", "--model", model,
                "--engine-arg", "dtype=float32", "--out", f"round-{r}/eval/scores.parquet",
                "--quiet"]

    def evaluate(r: int) -> list[str]:
        return [*DATA, "eval", "--scores", f"round-{r}/eval/scores.parquet",
                "--labels", "small=../../data/labels.csv", "--out", f"round-{r}/eval"]

    def push(r: int) -> list[str]:
        return [*DATA, "push", "--prefs", f"round-{r}/prefs", "--repo-id", "local/evo",
                "--version", f"round-{r}", "--local-dir", f"datasets/round-{r}", "--quiet"]

    def aggregate(r: int) -> list[str]:
        return [*DATA, "aggregate", "--votes", f"round-{r}/votes", "--out", f"round-{r}/prefs",
                "--lineage", f"round-{r}/voted-by.json", "--quiet"]

    def grpo(r: int, parent: str) -> list[str]:
        return [*TRAIN, "grpo", "--config", "cpu-smoke", "--dataset", f"datasets/round-{r}",
                "--model", parent, "--output-dir", f"round-{r}/model", "--disable_tqdm",
                "true", "--max_steps", "2"]

    assert {n: a for n, a in argv.items() if a is not None} == {
        "round-0/score": score(0, "../../models/tiny"),
        "round-0/eval": evaluate(0),
        "round-1/pairs": [*DATA, "pairs", "--images", "../../data/pool", "--num-pairs", "6",
                          "--seed", str(seed("pairs", 1)), "--out", "round-1/pairs.parquet",
                          "--quiet"],
        "round-1/vote": [*DATA, "vote", "--pairs", "round-1/pairs.parquet", "--out",
                         "round-1/votes", "--votes-per-pair", "2", "--seed",
                         str(seed("vote", 1)), "--max-tokens", "8", "--engine", "piqe",
                         "--no-reasoning", "--quiet"],
        "round-1/aggregate": aggregate(1),
        "round-1/push": push(1),
        "round-1/grpo": grpo(1, "../../models/tiny"),
        "round-1/score": score(1, "round-1/model"),
        "round-1/eval": evaluate(1),
        "round-2/pairs": [*DATA, "pairs", "--images", "../../data/pool", "--num-pairs", "6",
                          "--seed", str(seed("pairs", 2)), "--out",
                          "round-2/random-pairs.parquet", "--quiet"],
        "round-2/distort": [*DATA, "distort", "--images", "round-2/synthetic/refs", "--out",
                            "round-2/synthetic/distorted", "--seed", str(seed("distort", 2)),
                            "--quiet"],
        "round-2/synthetic-pairs": [*DATA, "pairs", "--synthetic", "round-2/synthetic/distorted",
                                    "--num-pairs", "20", "--seed",
                                    str(seed("synthetic-pairs", 2)), "--out",
                                    "round-2/synthetic/pairs.parquet"],
        "round-2/vote": [*DATA, "vote", "--pairs", "round-2/pairs.parquet", "--out",
                         "round-2/votes", "--votes-per-pair", "2", "--seed",
                         str(seed("vote", 2)), "--max-tokens", "8", "--engine", "transformers",
                         "--model", "round-1/model", "--engine-arg", "dtype=float32",
                         "--no-reasoning", "--quiet"],
        "round-2/aggregate": aggregate(2),
        "round-2/push": push(2),
        "round-2/grpo": grpo(2, "round-1/model"),
        "round-2/score": score(2, "round-2/model"),
        "round-2/eval": evaluate(2),
    }


def test_commands_that_depend_on_what_an_earlier_step_made():
    steps = {s.name: s for s in build_steps(context())}
    # fewer synthetic pairs available than asked: all of them
    synth = steps["round-2/synthetic-pairs"].argv({"available": 12})
    assert synth[synth.index("--num-pairs") + 1] == "12"
    # a complete checkpoint left by a killed attempt: training resumes from it
    grpo = steps["round-2/grpo"].argv({"resume": True})
    assert grpo[grpo.index("--output-dir") + 2:grpo.index("--output-dir") + 4] == [
        "--resume-from-checkpoint", "true"]
    # no eval set with enough valid scores: nothing to run
    assert steps["round-1/eval"].argv({"sets": [], "skipped": {"small": "..."}}) is None
    # the checkpoints are looked at again before every attempt of training
    assert steps["round-1/checkpoints"].redo_until == "round-1/grpo"


def test_plan_without_eval_or_synthetic_pairs_and_from_the_hub():
    ctx = context(evals=[], synthetic_pairs=0, repo_id="me/evo", init_from="base")
    ctx = RunContext(ctx.settings, Sources(pool="../../data/pool", base_model="Org/Base"),
                     ctx.layout)
    steps = build_steps(ctx)
    assert [s.name for s in steps][:6] == ["round-1/pairs", "round-1/vote", "round-1/voted-by",
                                           "round-1/aggregate", "round-1/push",
                                           "round-1/checkpoints"]
    assert len(steps) == 14
    by = {s.name: s for s in steps}
    assert by["round-2/push"].argv() == [
        *DATA, "push", "--prefs", "round-2/prefs", "--repo-id", "me/evo", "--version",
        "round-2", "--quiet"]
    grpo = by["round-2/grpo"].argv({"resume": False})
    assert grpo[grpo.index("--dataset"):grpo.index("--dataset") + 6] == [
        "--dataset", "me/evo", "--revision", "round-2", "--model", "Org/Base"]
    assert by["round-2/push"].outputs == () and by["round-2/grpo"].inputs == ()


def test_building_the_plan_reads_and_writes_nothing(monkeypatch):
    """The commands are functions of the settings and the layout only."""
    import builtins
    import os

    def refuse(*args, **kwargs):
        raise AssertionError(f"I/O while building the plan: {args[:1]}")

    steps = build_steps(context())
    for name in ("open", "stat", "listdir", "scandir", "lstat"):
        target = builtins if name == "open" else os
        monkeypatch.setattr(target, name, refuse)
    for step in steps:
        step.argv(FACTS.get(step.kind))


@pytest.mark.parametrize("folder", ["evoq_data", "evoq_train"])
def test_only_the_layout_formats_round_paths(folder):
    """A run's paths and step names (``round-<r>/...``) are formatted in layout.py only."""
    pattern = re.compile(r"""(f["'][^"'\n]*round-\{|["']round-["']|round-["']\s*\+)""")
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path.name == "layout.py" and path.parent.name == "evolve":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_layout_names():
    layout = RunLayout(Path("/runs/evo"))
    rl = layout.round(3)
    assert (rl.pairs, rl.votes, rl.prefs, rl.model, rl.scores, rl.step("grpo"), rl.log("grpo"),
            rl.version, rl.dataset) == (
        "round-3/pairs.parquet", "round-3/votes", "round-3/prefs", "round-3/model",
        "round-3/eval/scores.parquet", "round-3/grpo", "logs/round-3-grpo.log", "round-3",
        "datasets/round-3")
    assert layout.model_round("round-12/model") == 12
    assert layout.model_round("../round-1/model") is None
    assert layout.local_dataset("../out/", 2) == "../out/round-2"


def test_pool_labels_add_one_measuring_step_and_change_no_other_command():
    """--pool-labels never feeds training: the plan gains one `eval --prefs` step after each
    aggregate; every other step keeps its exact command, inputs and outputs, and none of
    them names the labels or reads what the measuring step writes."""
    plain = context()
    labels = "../../data/pool-labels.csv"
    labelled = RunContext(context(pool_labels="/data/pool-labels.csv").settings,
                          Sources(**{**plain.sources.__dict__, "pool_labels": labels}),
                          plain.layout)
    before, after = build_steps(plain), build_steps(labelled)
    names = []
    for s in before:
        names.append(s.name)
        if s.kind == "aggregate":
            names.append(f"round-{s.round}/label-accuracy")
    assert [s.name for s in after] == names
    by = {s.name: s for s in after}
    for s in before:
        t = by[s.name]
        assert (t.argv(FACTS.get(t.kind)), t.inputs, t.outputs) == (
            s.argv(FACTS.get(s.kind)), s.inputs, s.outputs), s.name
    for r in (1, 2):
        step = by[f"round-{r}/label-accuracy"]
        assert step.argv({"known": 4}) == [
            *DATA, "eval", "--prefs", f"round-{r}/prefs", "--labels", f"pool={labels}",
            "--out", f"round-{r}/label-accuracy"]
        assert step.argv({"known": 0}) is None  # no pair of known order: nothing to measure
        assert step.inputs == (f"round-{r}/prefs",)
        assert step.outputs == tuple(f"round-{r}/label-accuracy/accuracy.{e}"
                                     for e in ("md", "json", "png"))
    for s in after:
        if s.kind == "label-accuracy":
            continue
        argv = " ".join(s.argv(FACTS.get(s.kind)) or [])
        assert "pool-labels" not in argv and "label-accuracy" not in argv, s.name
        assert not any("label-accuracy" in i for i in s.inputs), s.name


@pytest.mark.parametrize("reader,what", [("read_metrics", "eval metrics"),
                                         ("read_label_accuracy", "pseudo-label accuracy")])
def test_a_broken_eval_file_is_named(tmp_path, reader, what):
    from evoq_data.core.errors import EvoqError
    from evoq_train.evolve import work

    path = tmp_path / "metrics.json"
    with pytest.raises(EvoqError, match=f"^{what} not found: {re.escape(str(path))}$"):
        getattr(work, reader)(path)
    path.write_text('{"wavg": ')
    with pytest.raises(EvoqError, match=f"^{what} {re.escape(str(path))} is not readable JSON"):
        getattr(work, reader)(path)


@pytest.mark.parametrize("repo_id", ["me/da..ta", "me/data.git", "data", "me/x--y"])
def test_evolve_refuses_a_repo_id_push_refuses(repo_id):
    """One name rule: evolve refuses before round 1 what push would refuse at its end."""
    from evoq_data.core.errors import EvoqError
    from evoq_data.core.names import repo_id_problem

    assert repo_id_problem(repo_id)
    s = EvolveSettings(pool="Org/pool", model="Org/base", rounds=2, run_dir="/runs/evo",
                       repo_id=repo_id)
    with pytest.raises(EvoqError, match=f"^malformed --repo-id {re.escape(repr(repo_id))}: "):
        s.validate()


def test_aggregate_arg_reaches_every_aggregate_and_only_it():
    """--aggregate-arg lands at the end of each round's aggregate command; no other step
    changes, and a run without it keeps the fingerprint it had before the option existed."""
    plain, extra = context(), context(aggregate_args=["--min-agreement=0.6"])
    before = {s.name: s for s in build_steps(plain)}
    for s in build_steps(extra):
        argv, old = s.argv(FACTS.get(s.kind)), before[s.name].argv(FACTS.get(s.kind))
        if s.kind == "aggregate":
            assert argv == [*old[:-1], "--min-agreement=0.6", "--quiet"], s.name
        else:
            assert argv == old, s.name



def test_aggregate_arg_must_be_an_option(tmp_path):
    from evoq_data.core.errors import EvoqError

    (tmp_path / "pool").mkdir()
    (tmp_path / "model").mkdir()
    s = EvolveSettings(pool=str(tmp_path / "pool"), model=str(tmp_path / "model"),
                       run_dir=str(tmp_path / "run"), train_config="cpu-smoke",
                       aggregate_args=["min-agreement=0.6"])
    with pytest.raises(EvoqError, match=r"^--aggregate-arg 'min-agreement=0.6': pass one "
                                        r"option of `evoq-data aggregate`"):
        s.validate()
    # a run without it keeps the fingerprint it had before the option existed
    assert "aggregate_args" not in dataclasses.replace(s, aggregate_args=[]).identity()
    assert s.identity()["aggregate_args"] == ["min-agreement=0.6"]
