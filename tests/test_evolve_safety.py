"""What evolve refuses or reports instead of running silently wrong, tested without a model:
a run folder, --local-dir or eval images inside the pool (or the pool inside the run);
eval manifests with a non-numeric MOS or a file that is not an image; a hand-edited
state.json or lineage.json; a pool or eval set whose images changed since the run started;
a run moved with its pool (it continues); a run rerun with fewer rounds (its later rounds are
kept in the lineage and report); SIGTERM (one line, exit 143)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from typer.testing import CliRunner

from evoq_train.evolve.config import EvolveSettings

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str):
    from evoq_train.cli import app

    return runner.invoke(app, list(args))


def write_labels(path: Path, images: list[Path], mos=None) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mos"])
        for i, p in enumerate(images):
            w.writerow([os.path.relpath(p, path.parent), (mos or {}).get(i, 1 + i)])
    return path


@pytest.fixture
def place(tmp_path) -> dict:
    """A pool, an eval set beside it, a (fake) base model folder and a run folder."""
    root = tmp_path / "work"
    make_images(root / "pool", 4)
    evals = make_images(root / "eval", 3, seed=9)
    (root / "model").mkdir()
    return {"root": root, "pool": root / "pool", "model": root / "model", "run": root / "run",
            "labels": write_labels(root / "labels.csv", evals), "evals": evals}


def args_for(p: dict, **over) -> list[str]:
    opts = {"--pool": str(p["pool"]), "--model": str(p["model"]), "--run-dir": str(p["run"]),
            "--train-config": "cpu-smoke", "--bootstrap-engine": "piqe",
            "--eval": f"small={p['labels']}", "--quiet": None}
    opts.update(over)
    args = ["evolve"]
    for key, value in opts.items():
        if value is not False:
            args += [key] if value is None else [key, value]
    return args


@pytest.mark.parametrize("case", ["run_in_pool", "pool_in_run", "local_dir_in_pool",
                                  "eval_in_pool"])
def test_run_folder_local_dir_and_eval_images_outside_the_pool(case, place):
    pool = place["pool"]
    if case == "run_in_pool":
        over, what = {"--run-dir": str(pool / "run")}, f"--run-dir {pool / 'run'} is inside"
    elif case == "pool_in_run":
        inner = place["run"] / "pool"
        shutil.copytree(pool, inner)
        over, what = {"--pool": str(inner)}, f"--pool {inner} is inside --run-dir"
    elif case == "local_dir_in_pool":
        over, what = {"--local-dir": str(pool / "out")}, f"--local-dir {pool / 'out'} is inside"
    else:
        labels = write_labels(place["root"] / "in-pool.csv", sorted(pool.glob("*.png")))
        over, what = {"--eval": f"small={labels}"}, "--eval small: image"
    assert_user_error(cli(*args_for(place, **over)), what)
    assert not (place["run"] / "state.json").exists()
    assert not (pool / "run").exists()


@pytest.mark.parametrize("case", ["text_mos", "empty_mos", "not_an_image"])
def test_eval_manifest_contents_checked_up_front(case, place):
    labels = place["root"] / "bad.csv"
    images = list(place["evals"])
    if case == "not_an_image":
        fake = place["root"] / "eval" / "notes.png"
        fake.write_text("not an image")
        images.append(fake)
        write_labels(labels, images)
        fragments = ("--eval small:", "notes.png", "is not an image")
    else:
        write_labels(labels, images, mos={1: "good" if case == "text_mos" else ""})
        fragments = ("--eval small:", f"{labels} row 2", "is not a number")
    assert_user_error(cli(*args_for(place, **{"--eval": f"small={labels}"})), *fragments)
    assert not place["run"].exists()


def _settings(p: dict, **over) -> EvolveSettings:
    s = EvolveSettings(**{"pool": str(p["pool"]), "model": str(p["model"]), "rounds": 2,
                          "run_dir": str(p["run"]), "train_config": "cpu-smoke",
                          "bootstrap_engine": "piqe", "evals": [f"small={p['labels']}"],
                          **over})
    s.validate()
    return s


def _open(s: EvolveSettings):
    from evoq_train.evolve.run import open_state

    run = Path(s.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    return open_state(s, run)


def test_pool_or_eval_images_changed_since_the_run_started(place):
    from evoq_data.core.errors import EvoqError

    _open(_settings(place))
    make_images(place["pool"] / "more", 1, seed=3)
    with pytest.raises(EvoqError, match="the images of --pool changed since the run started "
                                        r"\(4 image file\(s\) then, 5 now"):
        _open(_settings(place))
    shutil.rmtree(place["pool"] / "more")
    _open(_settings(place))  # restored: accepted

    shutil.copy(place["evals"][1], place["evals"][0])  # same name, other content
    with pytest.raises(EvoqError, match="the images of --eval small changed since the run "
                                        "started"):
        _open(_settings(place))


def test_a_run_moved_with_its_pool_continues(place, tmp_path):
    state = _open(_settings(place))
    first = json.loads(state.path.read_text())
    moved = tmp_path / "elsewhere" / "work"
    moved.parent.mkdir()
    shutil.move(place["root"], moved)
    again = {k: moved / Path(v).relative_to(place["root"]) if isinstance(v, Path) else v
             for k, v in place.items() if k != "evals"}
    state = _open(_settings(again))
    doc = json.loads(state.path.read_text())
    assert doc["fingerprint"] == first["fingerprint"]
    assert doc["settings"]["pool"] == "../pool"
    assert str(tmp_path) not in json.dumps(doc["settings"])


def test_a_run_started_before_paths_were_relative_continues(place):
    """A state.json whose settings hold absolute paths (as evolve wrote them before) is
    accepted with the same settings, and rewritten with paths relative to RUN."""
    from evoq_train.evolve.config import fingerprint
    from evoq_train.evolve.state import RunState

    s = _settings(place)
    place["run"].mkdir()
    old = RunState.open(place["run"].resolve(), s.identity(), 2)
    assert old.data["settings"]["pool"] == str(place["pool"].resolve())
    state = _open(s)
    assert state.data["settings"]["pool"] == "../pool"
    assert state.data["fingerprint"] == fingerprint(state.data["settings"])
    assert_user_error(cli(*args_for(place, **{"--votes-per-pair": "3"})),
                      "started with other settings", "--votes-per-pair: 32 -> 3")


def _state_file(place) -> Path:
    from evoq_train.evolve.state import RunState

    place["run"].mkdir()
    return RunState.open(place["run"].resolve(), _settings(place).identity(), 2).path


@pytest.mark.parametrize("case", ["steps_list", "no_files", "outputs_null"])
def test_hand_edited_state_is_one_line(case, place):
    path = _state_file(place)
    doc = json.loads(path.read_text())
    record = {"round": 1, "kind": "pairs", "status": "done", "attempts": 1,
              "outputs": [{"path": "round-1/votes", "kind": "folder", "sha256": "sha256:0"}]}
    if case == "steps_list":
        doc["steps"] = [record]
        key = "'steps' must be an object of step records by name, not a list"
    elif case == "no_files":
        doc["steps"] = {"round-1/vote": record}
        key = "steps['round-1/vote'].outputs[0].files must be an object of file hashes"
    else:
        doc["steps"] = {"round-1/vote": {**record, "outputs": None}}
        key = "steps['round-1/vote'].outputs must be a list, not null"
    path.write_text(json.dumps(doc))
    (place["run"] / "round-1" / "votes").mkdir(parents=True)  # the output is there
    assert_user_error(cli(*args_for(place)), f"{path.resolve()}: {key}")


@pytest.mark.parametrize(("edit", "key"), [
    (lambda d: d.update(rounds={"1": {}}), "'rounds' must be a list"),
    (lambda d: d["rounds"][0]["dataset"].pop("version"), "rounds[0].dataset.version must be"),
    (lambda d: d["rounds"][0]["dataset"].update(content_hash=7),
     "rounds[0].dataset.content_hash must be a string"),
    (lambda d: d["rounds"][0].update(model=["x"]), "rounds[0].model must be an object or null"),
])
def test_tampered_lineage_is_one_line(edit, key, tmp_path):
    doc = {"schema_version": 1, "run": {"base_model": "b", "base_model_revision": "sha256:1"},
           "rounds": [{"round": 1, "dataset": {"repo_id": "local/run", "version": "round-1",
                                               "content_hash": "sha256:2", "voted_by": None},
                       "model": None}]}
    run = tmp_path / "run"
    run.mkdir()
    (run / "lineage.json").write_text(json.dumps(doc))
    result = cli("lineage", str(run))
    assert result.exit_code == 0, result.output
    edit(doc)
    (run / "lineage.json").write_text(json.dumps(doc))
    assert_user_error(cli("lineage", str(run)), f"{run / 'lineage.json'}: {key}")


def test_rerun_with_fewer_rounds_keeps_the_later_rounds(tmp_path):
    """A 3-round run rerun with --rounds 2: round 3 stays in lineage.json and the report."""
    from evoq_train.evolve.context import RunContext, Sources
    from evoq_train.evolve.layout import RunLayout
    from evoq_train.evolve.lineage import build_lineage
    from evoq_train.evolve.report import collect
    from evoq_train.evolve.state import RunState

    run = tmp_path / "run"
    run.mkdir()
    state = RunState.open(run, {}, 3)
    for r in (1, 2, 3):
        name = f"round-{r}/grpo"
        state.begin(name, round=r, kind="grpo", command=None, inputs=[], log="x", resumed=False)
        state.finish(name, outputs=[], seconds=1.0,
                     summary={"revision": f"sha256:r{r}", "global_steps": 2,
                              "train_end": {"reward": 0.5 + r / 10}})
    state = RunState.open(run, {}, 2)
    s = EvolveSettings(pool="Org/pool", model="Org/base", rounds=2, run_dir=str(run))
    ctx = RunContext(s, Sources(pool="Org/pool", base_model="Org/base"), RunLayout(run), state)
    doc = build_lineage(ctx)
    assert [e["round"] for e in doc["rounds"]] == [1, 2, 3] and doc["run"]["rounds"] == 3
    assert doc["rounds"][2]["model"]["revision"] == "sha256:r3"
    assert doc["rounds"][2]["model"]["parent"] == {
        "model": "round-2/model", "revision": "sha256:r2", "role": "model of round 2"}
    assert [(row["round"], row["reward"]) for row in collect(ctx)] == [
        (1, 0.6), (2, 0.7), (3, 0.8)]


def test_sigterm_is_one_line_and_exit_143(place):
    """evolve stopped by SIGTERM while a step runs: it stops the step, says what was kept
    and how to resume, and exits 143 (as every evoq command does)."""
    args = args_for(place, **{"--eval": False, "--pairs-per-round": "6"})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "evoq_train.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = place["run"] / "state.json"
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step started"
        try:
            steps = json.loads(state.read_text())["steps"]
        except (OSError, ValueError, KeyError):
            steps = {}
        if any(rec.get("pid") for rec in steps.values()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM): every finished output file is kept"), err
    assert "rerun the same command to resume" in last


def test_aggregate_records_the_lineage_file_it_is_given(tmp_path):
    """`evoq-data aggregate --lineage FILE` writes the file's object as its manifest's
    `evolve` entry (evolve no longer rewrites the aggregate's output); a file that is not a
    JSON object is one line naming it, before anything is written."""
    from evoq_data.cli import app as data_app

    make_images(tmp_path / "pool", 4)

    def data(*args: str):
        return runner.invoke(data_app, list(args))

    assert data("pairs", "--images", str(tmp_path / "pool"), "--num-pairs", "3", "--out",
                str(tmp_path / "pairs.parquet"), "--quiet").exit_code == 0
    assert data("vote", "--pairs", str(tmp_path / "pairs.parquet"), "--out",
                str(tmp_path / "votes"), "--votes-per-pair", "2", "--engine", "piqe",
                "--quiet").exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text('["not", "an", "object"]')
    assert_user_error(data("aggregate", "--votes", str(tmp_path / "votes"), "--out",
                           str(tmp_path / "prefs"), "--lineage", str(bad), "--quiet"),
                      f"{bad} does not hold a JSON object")
    assert not (tmp_path / "prefs").exists()
    entry = {"round": 1, "version": "round-1", "base_model": "../m",
             "voted_by": {"role": "bootstrap judge", "engine": "piqe"}}
    good = tmp_path / "voted-by.json"
    good.write_text(json.dumps(entry))
    result = data("aggregate", "--votes", str(tmp_path / "votes"), "--out",
                  str(tmp_path / "prefs"), "--lineage", str(good), "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "prefs" / "manifest.json").read_text())
    assert manifest["evolve"] == entry
