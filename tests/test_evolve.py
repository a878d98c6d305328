"""``evoq-train evolve`` on CPU: two rounds end to end (PIQE bootstraps round 1, the tiny model
of round 1 votes round 2), the lineage in lineage.json and both kinds of card, the report,
reruns (nothing redone, changed settings refused, a changed output named), a run killed with
SIGKILL during round 2's vote and again during its training, and bad input refused before any
work starts.

A random-weight model never writes a readable answer, so round 2 would have no pseudo-label
to train on. The tests therefore use a copy of the tiny model whose generation config biases
it to answer "0" (then stop) whatever it is shown (``sequence_bias``, which
``save_pretrained`` carries into every trained round), and vote with ``--no-reasoning`` so
that a bare "0" is a valid vote for the image shown first. The votes then depend on the shown
order (seeded per vote), not on the trained weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from typer.testing import CliRunner

pytest.importorskip("trl")

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str):
    from evoq_train.cli import app

    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A pool of 6 images with MOS labels (--pool-labels) and an eval set of 5 other images
    with a labels manifest."""
    root = tmp_path_factory.mktemp("evolve-inputs")
    pool = make_images(root / "pool", 6)
    pool_labels = root / "pool-labels.csv"
    with open(pool_labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "mos"])
        for i, p in enumerate(pool):
            writer.writerow([p.relative_to(root).as_posix(), [3, 1, 5, 2, 6, 4][i]])
    images = make_images(root / "eval-set", 5, seed=7)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "mos"])
        for i, p in enumerate(images):
            writer.writerow([p.relative_to(root).as_posix(), 1 + 0.7 * i])
    return {"root": root, "pool": root / "pool", "labels": labels,
            "pool_labels": pool_labels, "pool_mos": {
                hashlib.sha256(p.read_bytes()).hexdigest(): [3, 1, 5, 2, 6, 4][i]
                for i, p in enumerate(pool)}}


def evolve_args(run: Path, model: Path, inputs: dict, **over) -> list[str]:
    opts = {"--pairs-per-round": "6", "--votes-per-pair": "2"}
    opts.update(over)
    args = ["evolve", "--pool", str(inputs["pool"]), "--model", str(model), "--rounds", "2",
            "--run-dir", str(run), "--engine", "transformers", "--max-tokens", "8",
            "--bootstrap-engine", "piqe", "--train-config", "cpu-smoke",
            "--vote-arg=--no-reasoning", "--vote-arg=--chunk-pairs=1",
            "--eval", f"small={inputs['labels']}", "--score-samples", "2",
            "--pool-labels", str(inputs["pool_labels"]), "--quiet"]
    for key, value in opts.items():
        args += [key, value]
    for setting in ("max_steps=2", "save_strategy=steps", "save_steps=1", "num_generations=2",
                    "max_completion_length=8"):
        args += ["--train-arg", setting]
    return args


PLAN = ["round-0/eval-images", "round-0/score", "round-0/eval",
        *[f"round-{r}/{s}" for r in (1, 2)
          for s in ("pairs", "vote", "voted-by", "aggregate", "label-accuracy", "push",
                    "checkpoints", "grpo", "score", "eval")]]


@pytest.fixture(scope="module")
def two_rounds(answering_vlm, inputs, tmp_path_factory) -> dict:
    """One uninterrupted two-round run (shared by the tests below)."""
    import resource

    def cpu() -> float:
        return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    run = tmp_path_factory.mktemp("evolve") / "run"
    started, cpu0 = time.perf_counter(), cpu()
    result = cli(*evolve_args(run, answering_vlm, inputs))
    assert result.exit_code == 0, result.output
    return {"run": run, "summary": json.loads(result.stdout),
            "seconds": time.perf_counter() - started, "cpu_seconds": cpu() - cpu0}


def _tree_hash(folder: Path) -> str:
    """sha256 over sorted relative paths and file hashes, checkpoints and hidden files out
    (computed here independently of evoq_train.evolve.state)."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not p.relative_to(folder).parts[0].startswith(("checkpoint-", ".")))
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        h.update(f"{p.relative_to(folder).as_posix()}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def expected_accuracy(run: Path, r: int, mos: dict) -> dict:
    """Round r's pseudo-label accuracy against the pool's MOS, computed here from the
    round's preferences.parquet (independently of evoq_data.evaluate.accuracy)."""
    rows = pq.read_table(run / f"round-{r}/prefs/preferences.parquet").to_pylist()
    out = {"with_truth": 0, "undecided": 0, "decisive": 0, "correct": 0, "no_truth": 0,
           "truth_ties": 0}
    bins: dict = {}
    for row in rows:
        a, b, p = row["image_a_id"], row["image_b_id"], row["p_star"]
        out["with_truth"] += 1  # every pool image is labelled, all MOS distinct
        if p is None or p == 0.5:
            out["undecided"] += 1
            continue
        right = int((p > 0.5) == (mos[a] > mos[b]))
        g = row["agreement"]
        name = "1.0 (unanimous)" if g == 1.0 else \
            f"[{int(g * 10) / 10:.1f}, {int(g * 10) / 10 + 0.1:.1f})"
        for t in (out, bins.setdefault(name, {"decisive": 0, "correct": 0})):
            t["decisive"] += 1
            t["correct"] += right
    for t in (out, *bins.values()):
        t["accuracy"] = t["correct"] / t["decisive"] if t["decisive"] else None
    out["coverage"] = out["decisive"] / out["with_truth"]
    return {**out, "by_agreement": bins}


def test_two_rounds_end_to_end(two_rounds, answering_vlm, inputs):
    run, summary = two_rounds["run"], two_rounds["summary"]
    print(f"two-round run: {two_rounds['seconds']:.1f} s wall, "
          f"{two_rounds['cpu_seconds']:.1f} s CPU (user + system, all processes)")
    assert summary["steps_run"] == PLAN and summary["steps_skipped"] == []
    state = json.loads((run / "state.json").read_text())
    assert list(state["steps"]) == PLAN
    assert {s["status"] for s in state["steps"].values()} == {"done"}
    assert {s["attempts"] for s in state["steps"].values()} == {1}

    # Each step ran as its own process, in RUN, with paths relative to RUN.
    vote2 = state["steps"]["round-2/vote"]["command"]
    assert vote2[:4] == [sys.executable, "-m", "evoq_data.cli", "vote"]
    assert vote2[vote2.index("--model") + 1] == "round-1/model"
    assert vote2[vote2.index("--pairs") + 1] == "round-2/pairs.parquet"
    grpo2 = state["steps"]["round-2/grpo"]["command"]
    assert grpo2[:4] == [sys.executable, "-m", "evoq_train.cli", "grpo"]
    for flag, value in (("--model", "round-1/model"), ("--dataset", "datasets/round-2"),
                        ("--output-dir", "round-2/model"), ("--config", "cpu-smoke")):
        assert grpo2[grpo2.index(flag) + 1] == value
    assert "--resume-from-checkpoint" not in grpo2
    assert (run / "logs" / "round-2-grpo.log").is_file()

    # --pool-labels: each round's pseudo-labels measured by `eval --prefs`, which no other
    # step mentions (nothing trains on the labels).
    labels = os.path.relpath(inputs["pool_labels"], run)
    for r in (1, 2):
        measure = state["steps"][f"round-{r}/label-accuracy"]
        assert measure["command"] == [sys.executable, "-m", "evoq_data.cli", "eval", "--prefs",
                                      f"round-{r}/prefs", "--labels", f"pool={labels}",
                                      "--out", f"round-{r}/label-accuracy"]
        assert measure["summary"]["label_accuracy"] == expected_accuracy(
            run, r, inputs["pool_mos"])
    for name, rec in state["steps"].items():
        if not name.endswith("/label-accuracy"):
            assert "pool-labels" not in " ".join(rec["command"] or []), name
            assert not any("label-accuracy" in i["path"] for i in rec["inputs"]), name

    # Fresh pairs each round, from seeds derived from the run seed and the round.
    p1 = pq.read_table(run / "round-1/pairs.parquet").column("pair_id").to_pylist()
    p2 = pq.read_table(run / "round-2/pairs.parquet").column("pair_id").to_pylist()
    assert len(p1) == len(p2) == 6 and p1 != p2

    # Round 1 was voted by PIQE, round 2 by the model of round 1.
    v1 = json.loads((run / "round-1/votes/manifest.json").read_text())
    v2 = json.loads((run / "round-2/votes/manifest.json").read_text())
    assert (v1["engine"], v1["model"]) == ("piqe", "piqe")
    assert (v2["engine"], v2["model"]) == ("transformers", "round-1/model")
    for r in (1, 2):
        stats = json.loads((run / f"round-{r}/prefs/stats.json").read_text())
        assert stats["votes"]["total"] == 12 and stats["votes"]["invalid"] == 0

    # Both versions published, each in its own folder, with the content hash lineage names.
    for r in (1, 2):
        meta = json.loads((run / f"datasets/round-{r}/evoq.json").read_text())
        assert (meta["version"], meta["repo_id"]) == (f"round-{r}", "local/run")
        assert summary["datasets"][r - 1]["content_hash"] == meta["content_hash"]


def test_lineage_contents(two_rounds, answering_vlm, inputs):
    from evoq_data.generation.spec import model_revision_of

    run = two_rounds["run"]
    lineage = json.loads((run / "lineage.json").read_text())
    meta = {r: json.loads((run / f"datasets/round-{r}/evoq.json").read_text()) for r in (1, 2)}
    rev = {r: model_revision_of(str(run / f"round-{r}/model")) for r in (1, 2)}
    base = os.path.relpath(answering_vlm, run)
    base_rev = model_revision_of(str(answering_vlm))
    ds = {r: {"repo_id": "local/run", "version": f"round-{r}",
              "content_hash": meta[r]["content_hash"]} for r in (1, 2)}
    acc = {r: expected_accuracy(run, r, inputs["pool_mos"]) for r in (1, 2)}
    assert lineage == {
        "schema_version": 1,
        "run": {"base_model": base, "base_model_revision": base_rev,
                "pool": os.path.relpath(inputs["pool"], run), "seed": 0, "rounds": 2,
                "init_from": "previous", "bootstrap_engine": "piqe", "repo_id": "local/run",
                "published_to": "local"},
        "rounds": [
            {"round": 1,
             "dataset": {**ds[1], "location": "datasets/round-1", "commit": None, "pairs": 6,
                         "synthetic_pairs": 0,
                         "voted_by": {"role": "bootstrap judge", "engine": "piqe",
                                      "model": "piqe", "model_revision": "pypiqe==1.2"},
                         "label_accuracy": acc[1]},
             "model": {"path": "round-1/model", "revision": rev[1],
                       "content_hash": _tree_hash(run / "round-1/model"), "global_steps": 2,
                       "recipe": "cpu-smoke", "trained_on": ds[1],
                       "parent": {"model": base, "revision": base_rev, "role": "base model"}}},
            {"round": 2,
             "dataset": {**ds[2], "location": "datasets/round-2", "commit": None, "pairs": 6,
                         "synthetic_pairs": 0,
                         "voted_by": {"role": "model of round 1", "engine": "transformers",
                                      "model": "round-1/model", "model_revision": rev[1],
                                      "round": 1, "trained_on": ds[1],
                                      "trained_from": {"model": base, "role": "base model",
                                                       "revision": base_rev}},
                         "label_accuracy": acc[2]},
             "model": {"path": "round-2/model", "revision": rev[2],
                       "content_hash": _tree_hash(run / "round-2/model"), "global_steps": 2,
                       "recipe": "cpu-smoke", "trained_on": ds[2],
                       "parent": {"model": "round-1/model", "revision": rev[1],
                                  "role": "model of round 1"}}},
        ],
    }
    # The vote of round 2 recorded the same revision of the round-1 model.
    v2 = json.loads((run / "round-2/votes/manifest.json").read_text())
    assert v2["model_revision"] == rev[1]

    # Dataset cards: who voted, and what that model was trained on.
    card1 = (run / "datasets/round-1/README.md").read_text()
    assert "## Lineage (`evoq-train evolve`)" in card1
    assert "| voted by | `piqe` @ `pypiqe==1.2` (bootstrap judge, engine `piqe`) |" in card1
    card2 = (run / "datasets/round-2/README.md").read_text()
    assert (f"| voted by | `round-1/model` @ `{rev[1]}` (model of round 1, engine "
            "`transformers`) |") in card2
    assert (f"| the voting model was trained on | `local/run` @ `round-1` "
            f"(`{meta[1]['content_hash']}`) |") in card2
    assert str(run) not in card2 and str(answering_vlm) not in card2
    assert meta[2]["aggregate"]["evolve"]["voted_by"]["model_revision"] == rev[1]

    # Model cards and evoq_train.json: parent, dataset version and hash, who voted it.
    train2 = json.loads((run / "round-2/model/evoq_train.json").read_text())
    assert train2["evolve"]["parent_model"] == "round-1/model"
    assert train2["evolve"]["parent_revision"] == rev[1]
    assert train2["evolve"]["dataset_version"] == "round-2"
    assert train2["evolve"]["dataset_content_hash"] == meta[2]["content_hash"]
    assert train2["dataset_content_hash"] == meta[2]["content_hash"]
    mcard = (run / "round-2/model/README.md").read_text()
    assert f"| trained from | `round-1/model` @ `{rev[1]}` (model of round 1;" in mcard
    assert f"| trained on | `local/run` @ `round-2` (`{meta[2]['content_hash']}`) |" in mcard
    assert str(run) not in mcard

    # The table.
    result = cli("lineage", str(run))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["round", "dataset", "content", "hash", "voted", "by", "model",
                                "revision", "trained", "from"]
    assert lines[2].split()[:4] == ["1", "local/run@round-1", meta[1]["content_hash"][:19],
                                    "piqe"]
    assert lines[3].split()[:4] == ["2", "local/run@round-2", meta[2]["content_hash"][:19],
                                    "round-1/model"]
    assert "round-2/model" in lines[3] and lines[3].endswith("round-1/model (model of round 1)")


def test_report(two_rounds, inputs):
    run = two_rounds["run"]
    report = (run / "report.md").read_text()
    lines = report.splitlines()
    head = lines.index(next(ln for ln in lines if ln.startswith("| round | voted by")))
    rows = lines[head + 2:head + 5]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1", "2"]
    assert lines[head + 5] == ""
    stats = json.loads((run / "round-2/prefs/stats.json").read_text())
    cells = [c.strip() for c in rows[2].split("|")[1:-1]]
    assert cells[1:5] == ["model of round 1", "6", "12", "0.0 %"]
    assert cells[5] == f"{stats['agreement']['mean']:.3f}"
    assert cells[6] == f"{100 * stats['position_bias']['share_first_shown']:.1f} %"
    state = json.loads((run / "state.json").read_text())
    end = state["steps"]["round-2/grpo"]["summary"]["train_end"]
    ckpt = json.loads((run / "round-2/model/checkpoint-2/trainer_state.json").read_text())
    last = [h for h in ckpt["log_history"] if "reward" in h][-1]
    assert (end["step"], end["reward"], end["parse_failure_rate"]) == (
        2, last["reward"], last["parse_failure_rate"])
    acc = expected_accuracy(run, 2, inputs["pool_mos"])
    assert cells[7] == ("—" if acc["accuracy"] is None else f"{100 * acc['accuracy']:.1f} %")
    assert cells[8] == f"{last['reward']:.3f}"
    # The random model writes no valid score: said so, never a made-up correlation.
    assert "- round 2, small: only 0 of 5 image(s) got a valid score" in report
    assert cells[10:12] == ["—", "—"]
    # The accuracy table: overall and per agreement bin, as correct/decisive.
    row2 = next(ln for ln in report.splitlines() if ln.startswith("| 2 | ")
                and "model of round 1" not in ln)
    overall = row2.split("|")[2].strip()
    assert overall == ("—" if acc["accuracy"] is None else
                       f"{100 * acc['accuracy']:.1f} % ({acc['correct']}/{acc['decisive']})")
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_refuses_changes_and_names_a_changed_file(two_rounds, answering_vlm,
                                                              inputs):
    run = two_rounds["run"]
    result = cli(*evolve_args(run, answering_vlm, inputs))
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["steps_run"] == [] and again["steps_skipped"] == PLAN

    message = assert_user_error(
        cli(*evolve_args(run, answering_vlm, inputs, **{"--votes-per-pair": "3"})),
        "started with other settings", "--votes-per-pair: 2 -> 3")
    assert "--pairs-per-round" not in message

    stats = run / "round-1/prefs/stats.md"
    original = stats.read_bytes()
    try:
        stats.write_bytes(original + b"\n")
        assert_user_error(cli(*evolve_args(run, answering_vlm, inputs)),
                          f"{stats} (output of the finished step round-1/aggregate) changed")
    finally:
        stats.write_bytes(original)


@pytest.mark.parametrize("case", ["missing_pool", "zero_rounds", "eval_without_path"])
def test_bad_input_is_one_line_before_any_work(case, tmp_path, answering_vlm, inputs):
    run = tmp_path / "run"
    args = evolve_args(run, answering_vlm, inputs)
    if case == "missing_pool":
        args[args.index("--pool") + 1] = str(tmp_path / "no-such-pool")
        fragments = ("--pool", "no-such-pool", "not found")
    elif case == "zero_rounds":
        args[args.index("--rounds") + 1] = "0"
        fragments = ("--rounds must be an integer of at least 1, got 0",)
    else:
        bad = tmp_path / "labels.csv"
        bad.write_text("image_id,mos\n" + "ab" * 32 + ",3.0\n")
        args[args.index("--eval") + 1] = f"small={bad}"
        fragments = ("need a path column", str(bad))
    assert_user_error(cli(*args), *fragments)
    assert not run.exists()


def _partial_run(tmp_path: Path, **settings):
    """A run's context, to run some of its steps (the ones before training) directly."""
    from evoq_train.evolve.config import EvolveSettings
    from evoq_train.evolve.context import RunContext, Sources
    from evoq_train.evolve.layout import RunLayout
    from evoq_train.evolve.state import RunState
    from evoq_train.evolve.steps import build_steps

    s = EvolveSettings(**{"rounds": 2, "run_dir": str(tmp_path / "run"),
                          "train_config": "cpu-smoke", **settings})
    s.validate()
    run = (tmp_path / "run")
    run.mkdir()
    run = run.resolve()
    ctx = RunContext(s, Sources.resolve(s, run), RunLayout(run),
                     RunState.open(run, s.identity(), 2))
    return ctx, {step.name: step for step in build_steps(ctx)}


def test_synthetic_pairs_join_the_random_pairs_from_round_2(tmp_path, inputs, tiny_vlm):
    from evoq_train.evolve.run import run_step

    ctx, steps = _partial_run(tmp_path, pool=str(inputs["pool"]), model=str(tiny_vlm),
                              pairs_per_round=6, synthetic_pairs=20)
    names = list(steps)
    assert "round-1/distort" not in names
    assert names[names.index("round-2/pairs"):names.index("round-2/vote") + 1] == [
        "round-2/pairs", "round-2/references", "round-2/distort", "round-2/synthetic-pairs",
        "round-2/mix-pairs", "round-2/vote"]
    vote = steps["round-2/vote"].argv()
    assert vote[vote.index("--pairs") + 1] == "round-2/pairs.parquet"
    for name in ("round-2/pairs", "round-2/references", "round-2/distort",
                 "round-2/synthetic-pairs", "round-2/mix-pairs"):
        run_step(ctx, steps[name], quiet=True)
    run = ctx.layout.root
    random_ = pq.read_table(run / "round-2/random-pairs.parquet").to_pylist()
    synthetic = pq.read_table(run / "round-2/synthetic/pairs.parquet").to_pylist()
    mixed = pq.read_table(run / "round-2/pairs.parquet").to_pylist()
    assert (len(random_), len(synthetic)) == (6, 20)
    assert mixed == random_ + synthetic
    assert all(r["known_better_id"] for r in synthetic)
    # The references are a subset of the round's pool images (their bytes, by id).
    pool_ids = {r[f"image_{s}_id"] for r in random_ for s in "ab"}
    refs = {r["reference_id"] for r in synthetic}
    assert refs and refs <= pool_ids
    manifest = json.loads((run / "round-2/pairs.manifest.json").read_text())
    assert manifest["num_pairs"] == 26
    assert manifest["mixed"]["random"]["pairs"] == 6
    assert manifest["mixed"]["synthetic"]["pairs"] == 20
    assert manifest["mixed"]["duplicates_dropped"] == 0
    assert manifest["source"] == os.path.relpath(inputs["pool"], run)


def test_openai_bootstrap_judge_votes_round_1(tmp_path, inputs, tiny_vlm, fake_endpoint):
    """Round 1 voted by a model behind an OpenAI-compatible endpoint (a loopback fake that
    always answers \\boxed{1}); recorded as the bootstrap judge in the dataset's lineage."""
    from fixtures.openai_server import Script

    from evoq_train.evolve.lineage import build_lineage
    from evoq_train.evolve.run import run_step

    url = fake_endpoint(Script([], answer="\\boxed{1}"))
    ctx, steps = _partial_run(tmp_path, pool=str(inputs["pool"]), model=str(tiny_vlm),
                              pairs_per_round=4, votes_per_pair=2,
                              bootstrap_engine="openai", bootstrap_model="big-judge",
                              bootstrap_args=[f"base_url={url}"])
    vote = steps["round-1/vote"].argv()
    i = vote.index("--engine")
    assert vote[i:i + 6] == ["--engine", "openai", "--model", "big-judge", "--base-url", url]
    for name in ("round-1/pairs", "round-1/vote", "round-1/voted-by", "round-1/aggregate"):
        run_step(ctx, steps[name], quiet=True)
    manifest = json.loads((ctx.layout.root / "round-1/prefs/manifest.json").read_text())
    assert manifest["evolve"]["voted_by"] == {
        "role": "bootstrap judge", "engine": "openai", "model": "big-judge",
        "model_revision": "unknown"}
    stats = json.loads((ctx.layout.root / "round-1/prefs/stats.json").read_text())
    assert (stats["votes"]["total"], stats["votes"]["invalid"]) == (8, 0)
    assert build_lineage(ctx)["rounds"][0]["dataset"] is None  # not published yet


@pytest.mark.slow  # four child commands and a loopback Hub (~6 s); test_evolve_plan.py checks the push/grpo argv by repo id and tag, test_publish_hub.py the upload
def test_round_published_to_the_hub_as_version_round_1(tmp_path, inputs, tiny_vlm, hub,
                                                       monkeypatch):
    """--repo-id: the push step uploads tag round-1 (loopback Hub) and training reads it
    back by repo id and revision."""
    from evoq_train.evolve.lineage import build_lineage
    from evoq_train.evolve.run import run_step

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the children read the environment
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    ctx, steps = _partial_run(tmp_path, pool=str(inputs["pool"]), model=str(tiny_vlm),
                              pairs_per_round=4, votes_per_pair=2, bootstrap_engine="piqe",
                              repo_id="lab/evo")
    for name in ("round-1/pairs", "round-1/vote", "round-1/voted-by", "round-1/aggregate",
                 "round-1/push"):
        run_step(ctx, steps[name], quiet=True)
    repo = hub.repo("lab/evo")
    meta = json.loads(repo.commits[repo.tags["round-1"]].tree["evoq.json"].data.decode())
    dataset = build_lineage(ctx)["rounds"][0]["dataset"]
    assert (dataset["repo_id"], dataset["version"], dataset["content_hash"]) == (
        "lab/evo", "round-1", meta["content_hash"])
    assert dataset["commit"] == repo.tags["round-1"]
    assert meta["aggregate"]["evolve"]["voted_by"]["role"] == "bootstrap judge"
    assert ctx.state.step("round-1/push")["outputs"] == []
    grpo = steps["round-1/grpo"].argv({"resume": False})
    assert grpo[grpo.index("--dataset"):grpo.index("--dataset") + 4] == [
        "--dataset", "lab/evo", "--revision", "round-1"]


def test_one_evolve_per_run_folder(tmp_path, answering_vlm, inputs):
    from evoq_train.evolve.run import run_lock

    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        assert_user_error(cli(*evolve_args(run, answering_vlm, inputs)),
                          f"another evoq-train evolve is running in {run.resolve()}")
    assert not (run / "state.json").exists()


def test_yaml_config_sets_fields_and_the_command_line_wins(tmp_path, inputs, tiny_vlm):
    from evoq_train.evolve.config import EvolveSettings

    config = tmp_path / "evolve.yaml"
    config.write_text(f"pool: {inputs['pool']}\nmodel: {tiny_vlm}\nvotes-per-pair: 4\n"
                      "engine_arg: [dtype=float32]\n"
                      f"eval: {{small: {inputs['labels']}}}\nrounds: 3\n")
    s = EvolveSettings.build(config, {"rounds": 1, "run_dir": str(tmp_path / "run"),
                                      "engine_args": None})
    assert (s.pool, s.model, s.votes_per_pair, s.rounds) == (
        str(inputs["pool"]), str(tiny_vlm), 4, 1)
    assert s.engine_args == ["dtype=float32"] and s.evals == [f"small={inputs['labels']}"]
    assert s.pairs_per_round == 20000 and s.train_config == "qwen2.5-vl-7b-8xa100"
    config.write_text("pool: x\npairs: 3\n")
    assert_user_error(cli("evolve", "--config", str(config), "--run-dir", str(tmp_path / "r")),
                      "unknown setting 'pairs'")


def test_gpu_commands_init_from_base_and_accelerate(tmp_path, inputs, tiny_vlm):
    """The commands of the 8-GPU setup, built (not run): vLLM votes with the previous
    round's model, GRPO under accelerate launch with the shipped ZeRO-3 config, and
    --init-from base trains every round from the base model."""
    from evoq_train.recipes import recipes_dir

    ctx, steps = _partial_run(tmp_path, pool=str(inputs["pool"]), model=str(tiny_vlm),
                              engine="vllm", engine_args=["tensor_parallel_size=2"],
                              accelerate_config="accelerate/zero3", init_from="base",
                              train_config="qwen2.5-vl-7b-8xa100", repo_id="me/evoq-koniq")
    base = os.path.relpath(tiny_vlm, ctx.layout.root)
    vote = steps["round-2/vote"].argv()
    i = vote.index("--engine")
    assert vote[i:i + 6] == ["--engine", "vllm", "--model", "round-1/model", "--engine-arg",
                             "tensor_parallel_size=2"]
    vote1 = steps["round-1/vote"].argv()
    assert vote1[vote1.index("--model") + 1] == base
    grpo = steps["round-2/grpo"].argv({"resume": False})
    zero3 = os.path.relpath(recipes_dir() / "accelerate" / "zero3.yaml", ctx.layout.root)
    assert grpo[:8] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        zero3, "-m", "evoq_train.cli", "grpo"]
    for flag, value in (("--config", "qwen2.5-vl-7b-8xa100"), ("--dataset", "me/evoq-koniq"),
                        ("--revision", "round-2"), ("--model", base)):
        assert grpo[grpo.index(flag) + 1] == value
    assert (ctx.parent(2).path, ctx.parent(2).role) == (base, "base model")


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"evolve ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "evoq_train.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cwd(proc_dir: Path) -> str | None:
    try:
        return os.readlink(proc_dir / "cwd")
    except OSError:
        return None


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_during_vote_and_training_then_rerun(two_rounds, answering_vlm, inputs,
                                                     tmp_path):
    """Slow (a second two-round run plus two restarts: 5-12 minutes on 2 shared cores):
    evolve is killed with SIGKILL when round 2's votes get their first shard, and again when
    round 2's training (under accelerate launch, whose training process outlives a killed
    evolve) has written checkpoint-1; each rerun stops what was left running and continues
    the step in flight, and the datasets equal the uninterrupted run's."""
    run = tmp_path / "run"
    accelerate = tmp_path / "cpu.yaml"
    accelerate.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\n"
                          "mixed_precision: 'no'\nnum_machines: 1\nnum_processes: 1\n"
                          "use_cpu: true\n")
    args = evolve_args(run, answering_vlm, inputs, **{"--accelerate-config": str(accelerate)})
    votes = run / "round-2" / "votes"

    proc = _start(args)
    _wait_for(lambda: any(votes.glob("votes-*.parquet")), proc, "round 2's first vote shard")
    _kill(proc)
    state = json.loads((run / "state.json").read_text())
    assert state["steps"]["round-2/vote"]["status"] == "running"
    assert len(list(votes.glob("votes-*.parquet"))) < 6, "the vote ended before the kill"

    ckpt = run / "round-2" / "model" / "checkpoint-1" / "trainer_state.json"
    proc = _start(args)
    _wait_for(ckpt.is_file, proc, "round 2's checkpoint-1")
    _kill(proc)
    state = json.loads((run / "state.json").read_text())
    assert state["steps"]["round-2/vote"]["attempts"] == 2
    assert state["steps"]["round-2/grpo"]["status"] == "running"
    # accelerate launch died with evolve; the training process it started did not.
    left = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and _cwd(p) == str(run.resolve())]
    assert left, "no training process outlived evolve (did training end before the kill?)"

    done = subprocess.run([sys.executable, "-m", "evoq_train.cli", *args], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["steps_run"] == ["round-2/checkpoints", "round-2/grpo", "round-2/score",
                                    "round-2/eval"]
    state = json.loads((run / "state.json").read_text())
    assert list(state["steps"]) == PLAN
    assert {s["status"] for s in state["steps"].values()} == {"done"}
    grpo = state["steps"]["round-2/grpo"]
    assert grpo["attempts"] == 2 and "--resume-from-checkpoint" in grpo["command"]
    assert grpo["command"][2] == "accelerate.commands.launch"
    for pid in left:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    history = json.loads((run / "round-2/model/checkpoint-2/trainer_state.json").read_text())
    assert [h["step"] for h in history["log_history"] if "loss" in h] == [1, 2]

    # The vote resumed from its shards: the same votes as the uninterrupted run, and the
    # same published content.
    reference = two_rounds["run"]
    columns = ["pair_id", "vote_index", "swapped", "raw_text", "answer", "winner_id", "seed"]

    def votes_of(folder: Path) -> list[dict]:
        rows = pq.read_table(sorted(folder.glob("votes-*.parquet"))).select(columns).to_pylist()
        return sorted(rows, key=lambda r: (r["pair_id"], r["vote_index"]))

    assert votes_of(votes) == votes_of(reference / "round-2" / "votes")
    ours = json.loads((run / "lineage.json").read_text())
    theirs = json.loads((reference / "lineage.json").read_text())
    assert [r["dataset"]["content_hash"] for r in ours["rounds"]] == \
        [r["dataset"]["content_hash"] for r in theirs["rounds"]]
