"""``evoq-train evolve --pool-labels``, without a model: the labels file checked before any
work (one line, exit 1, RUN not created), its content in the run's fingerprint, and the
report, plot and lineage rendered from a fabricated ``accuracy.json`` of the round's
``label-accuracy`` step. (The two-round run in test_evolve.py measures it for real.) Also the
report's reason for an SRCC it cannot give, from a fabricated eval step."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from typer.testing import CliRunner

from evoq_data.core.errors import EvoqError
from evoq_train.evolve.config import EvolveSettings

runner = CliRunner()


def cli(*args: str):
    from evoq_train.cli import app

    return runner.invoke(app, list(args))


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture
def place(tmp_path) -> dict:
    """A pool of 4 images, one image outside it, pool labels, a (fake) base model folder."""
    root = tmp_path / "work"
    pool = make_images(root / "pool", 4)
    other = make_images(root / "other", 1, seed=9)
    (root / "model").mkdir()
    rel = [os.path.relpath(p, root) for p in pool]
    labels = write_csv(root / "pool-labels.csv",
                       [["path", "mos"], *[[p, 1 + i] for i, p in enumerate(rel)]])
    return {"root": root, "pool": root / "pool", "model": root / "model", "run": root / "run",
            "images": rel, "other": os.path.relpath(other[0], root), "labels": labels}


def args_for(p: dict, labels: str) -> list[str]:
    return ["evolve", "--pool", str(p["pool"]), "--model", str(p["model"]), "--run-dir",
            str(p["run"]), "--train-config", "cpu-smoke", "--bootstrap-engine", "piqe",
            "--pool-labels", labels, "--quiet"]


@pytest.mark.parametrize("case", ["missing", "unreadable", "no_mos", "not_a_number",
                                  "not_in_pool", "conflicting", "missing_image", "hub_pool"])
def test_pool_labels_are_checked_before_any_work(case, place):
    root, images = place["root"], place["images"]
    labels = root / "bad.csv"
    args = None
    if case == "missing":
        labels = root / "nope.csv"
        fragments = ("--pool-labels", "nope.csv", "not found")
    elif case == "unreadable":
        labels = root / "bad.parquet"
        labels.write_bytes(b"not a parquet file")
        fragments = ("--pool-labels", str(labels), "cannot read")
    elif case == "no_mos":
        write_csv(labels, [["path", "score"], [images[0], 1]])
        fragments = ("--pool-labels", "no 'mos' column")
    elif case == "not_a_number":
        write_csv(labels, [["path", "mos"], [images[0], 1], [images[1], "good"]])
        fragments = ("--pool-labels", f"{labels} row 2: MOS 'good' is not a number",)
    elif case == "not_in_pool":
        write_csv(labels, [["path", "mos"], [images[0], 1], [images[1], 2],
                           [place["other"], 3]])
        fragments = (f"--pool-labels {labels}: 1 labelled image(s) are not images of --pool",
                     "row(s) 3")
    elif case == "conflicting":
        write_csv(labels, [["path", "mos"], [images[0], 1], [images[1], 2], [images[0], 4]])
        fragments = ("--pool-labels", "twice with different MOS", "(row 1) and 4 (row 3)")
    elif case == "missing_image":
        write_csv(labels, [["path", "mos"], ["pool/gone.png", 1]])
        fragments = ("--pool-labels", "do not exist", "gone.png")
    else:
        args = args_for(place, str(place["labels"]))
        args[args.index("--pool") + 1] = "someone/some-pool"
        fragments = ("--pool-labels", "needs a local --pool folder")
    result = cli(*(args or args_for(place, str(labels))))
    assert_user_error(result, *fragments)
    assert not place["run"].exists()


def test_labels_are_part_of_the_fingerprint(place):
    from evoq_train.evolve.run import open_state

    def settings(**over) -> EvolveSettings:
        return EvolveSettings(pool=str(place["pool"]), model=str(place["model"]),
                              run_dir=str(place["run"]), bootstrap_engine="piqe", **over)

    # a run without the option keeps the fingerprint it had before the option existed
    assert "pool_labels" not in settings().identity()
    run = place["run"]
    run.mkdir()
    labelled = settings(pool_labels=str(place["labels"]))
    open_state(labelled, run)
    open_state(labelled, run)  # the same labels: accepted
    with open(place["labels"], "a") as fh:
        fh.write(f"{place['images'][0]},1\n")  # one more (merged) row: other content
    with pytest.raises(EvoqError, match="started with other settings .*--pool-labels"):
        open_state(labelled, run)
    with pytest.raises(EvoqError, match="started with other settings .*--pool-labels"):
        open_state(settings(), run)  # nor may the labels be dropped from a run


ACCURACY = {  # as `evoq-data eval --prefs` writes it (evoq_data/evaluate/accuracy.py)
    "prefs": "round-1/prefs/preferences.parquet", "labels": "pool=../pool-labels.csv",
    "pairs": 6, "with_truth": 5, "no_truth": 1, "truth_ties": 0, "undecided": 1,
    "decisive": 4, "correct": 3, "accuracy": 0.75, "coverage": 0.8,
    "by_agreement": {"[0.5, 0.6)": {"decisive": 1, "correct": 0, "accuracy": 0.0},
                     "1.0 (unanimous)": {"decisive": 3, "correct": 3, "accuracy": 1.0}},
    "by_group": {}, "warnings": []}


def test_report_plot_and_lineage_from_the_measured_accuracy(place):
    from evoq_train.evolve.context import RunContext, Sources
    from evoq_train.evolve.layout import RunLayout
    from evoq_train.evolve.lineage import round_lineage
    from evoq_train.evolve.report import collect, render_markdown, write_report
    from evoq_train.evolve.state import RunState
    from evoq_train.evolve.steps import build_steps

    s = EvolveSettings(pool=str(place["pool"]), model=str(place["model"]),
                       run_dir=str(place["run"]), bootstrap_engine="piqe",
                       train_config="cpu-smoke", pool_labels=str(place["labels"]))
    run = place["run"]
    run.mkdir()
    run = run.resolve()
    ctx = RunContext(s, Sources.resolve(s, run), RunLayout(run),
                     RunState.open(run, s.identity(), 2))
    assert ctx.sources.pool_labels == "../pool-labels.csv"
    steps = {step.name: step for step in build_steps(ctx)}
    state = ctx.require_state()
    out = run / "round-1/label-accuracy"
    out.mkdir(parents=True)
    (out / "accuracy.json").write_text(json.dumps(ACCURACY))
    for r, known in ((1, 5), (2, 0)):
        name = f"round-{r}/label-accuracy"
        state.begin(name, round=r, kind="label-accuracy", command=None, inputs=[], log="x",
                    resumed=False)
        state.finish(name, outputs=[], summary=steps[name].finish({"known": known}),
                     seconds=1.0)
    by_agreement = {"[0.5, 0.6)": {"decisive": 1, "correct": 0, "accuracy": 0.0},
                    "1.0 (unanimous)": {"decisive": 3, "correct": 3, "accuracy": 1.0}}
    assert state.summary("round-1/label-accuracy") == {"label_accuracy": {
        "accuracy": 0.75, "correct": 3, "decisive": 4, "coverage": 0.8, "with_truth": 5,
        "undecided": 1, "no_truth": 1, "truth_ties": 0, "by_agreement": by_agreement}}
    assert state.summary("round-2/label-accuracy")["label_accuracy"] is None

    report = render_markdown(ctx, collect(ctx), None)
    lines = report.splitlines()
    head = next(ln for ln in lines if ln.startswith("| round | voted by"))
    cells = [c.strip() for c in head.split("|")[1:-1]]
    col = cells.index("label accuracy")
    assert cells[col - 1] == "first-shown share"
    main = lines[lines.index(head) + 2:lines.index(head) + 4]  # the rows of rounds 1, 2
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in main}
    assert rows["1"][col] == "75.0 %" and rows["2"][col] == "—"
    assert ("| round | all decisive pairs | agreement [0.5, 0.6) | agreement 1.0 (unanimous) |"
            in lines)
    assert "| 1 | 75.0 % (3/4) | 0.0 % (0/1) | 100.0 % (3/3) |" in lines
    assert "| 2 | — | — | — |" in lines
    assert ("- round 2: no pair of the round has both images labelled with different MOS "
            "(or a known order)") in lines
    assert "`../pool-labels.csv`" in report and "no step trains on these labels" in report

    md, png = write_report(ctx)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(png).size[0] > 1500  # the fourth panel (13 in wide without it)

    # lineage.json: the dataset entry of a published round carries the measurement
    (run / "round-1/prefs").mkdir(parents=True)
    (run / "round-1/prefs/manifest.json").write_text("{}")
    state.begin("round-1/push", round=1, kind="push", command=None, inputs=[], log="x",
                resumed=False)
    state.finish("round-1/push", outputs=[], summary={"repo_id": "local/run",
                                                      "version": "round-1"}, seconds=1.0)
    entry = round_lineage(ctx, 1)
    assert entry["dataset"]["label_accuracy"] == state.summary(
        "round-1/label-accuracy")["label_accuracy"]


def test_a_distort_folder_as_pool_with_its_known_order(tmp_path):
    """--pool-labels may be the distortions.parquet of an `evoq-data distort` pool: accepted
    when its images are the pool's, refused when they are another folder's; the pairs of
    known order are those of one reference and one distortion type at different levels."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evoq_data.images.distort import run_distort
    from evoq_train.evolve.checks import check_pool_labels
    from evoq_train.evolve.work import pairs_with_known_order

    make_images(tmp_path / "refs", 2)
    run_distort(tmp_path / "refs", tmp_path / "pool", distortions=["blur", "noise"],
                quiet=True)
    (tmp_path / "model").mkdir()
    manifest = tmp_path / "pool" / "distortions.parquet"

    def settings(pool: Path) -> EvolveSettings:
        return EvolveSettings(pool=str(pool), model=str(tmp_path / "model"),
                              run_dir=str(tmp_path / "run"), pool_labels=str(manifest))

    check_pool_labels(settings(tmp_path / "pool"))  # accepted
    other = tmp_path / "other"
    make_images(other, 2, seed=4)
    rows = pq.read_table(manifest).to_pylist()
    assert len(rows) == 2 * (1 + 2 * 5)  # per reference: itself, 2 types x 5 levels
    with pytest.raises(EvoqError, match=r"22 labelled image\(s\) are not images of --pool"):
        check_pool_labels(settings(other))

    ref0 = rows[0]["reference_id"]
    by = {(r["reference_id"], r["distortion"], r["level"]): r["image_id"] for r in rows}
    other_ref = next(r["reference_id"] for r in rows if r["reference_id"] != ref0)
    pairs = [(by[(ref0, "blur", 1)], by[(ref0, "blur", 3)]),       # known: level 1 better
             (by[(ref0, "reference", 0)], by[(ref0, "noise", 2)]),  # known: the reference
             (by[(ref0, "blur", 2)], by[(ref0, "noise", 2)]),       # two types: unknown
             (by[(ref0, "blur", 2)], by[(other_ref, "blur", 4)])]   # two references: unknown
    prefs = tmp_path / "prefs"
    prefs.mkdir()
    pq.write_table(pa.table({"image_a_id": [a for a, _ in pairs],
                             "image_b_id": [b for _, b in pairs]}),
                   prefs / "preferences.parquet")
    assert pairs_with_known_order(prefs, manifest) == 2


def test_pairs_of_known_order_against_mos(place):
    """Both images labelled with different MOS: known; a MOS tie or an unlabelled image: not
    (a round with none is not measured)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from evoq_train.evolve.work import pairs_with_known_order

    root, images = place["root"], place["images"]
    labels = write_csv(root / "partial.csv", [["path", "mos"], [images[0], 1], [images[1], 2],
                                              [images[2], 2]])
    ids = [hashlib.sha256((root / p).read_bytes()).hexdigest() for p in images]
    prefs = root / "prefs"
    prefs.mkdir()

    def known(pairs) -> int:
        pq.write_table(pa.table({"image_a_id": [ids[a] for a, _ in pairs],
                                 "image_b_id": [ids[b] for _, b in pairs]}),
                       prefs / "preferences.parquet")
        return pairs_with_known_order(prefs, labels)

    assert known([(0, 1), (2, 0), (1, 2), (0, 3), (3, 2)]) == 2  # (1, 2): a tie; 3: no MOS
    assert known([(1, 2), (3, 0)]) == 0


def test_report_says_why_a_round_has_no_srcc(place):
    """A round whose model scored every held-out image alike has SRCC "—" and the reason
    under "No correlation", beside a set skipped for too few valid scores."""
    from evoq_train.evolve.context import RunContext, Sources
    from evoq_train.evolve.layout import RunLayout
    from evoq_train.evolve.report import collect, render_markdown
    from evoq_train.evolve.state import RunState
    from evoq_train.evolve.steps import build_steps

    s = EvolveSettings(pool=str(place["pool"]), model=str(place["model"]),
                       run_dir=str(place["run"]), bootstrap_engine="piqe",
                       train_config="cpu-smoke", rounds=1,
                       evals=[f"held={place['labels']}", f"few={place['labels']}"])
    run = place["run"]
    run.mkdir()
    run = run.resolve()
    ctx = RunContext(s, Sources.resolve(s, run), RunLayout(run),
                     RunState.open(run, s.identity(), 1))
    steps = {step.name: step for step in build_steps(ctx)}
    state = ctx.require_state()
    reason = "every one of the 4 images got the same score (1), so SRCC and PLCC are undefined"
    metrics = run / ctx.layout.round(1).metrics[1]
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({
        "benchmarks": [{"benchmark": "held", "n": 4, "srcc": None, "plcc": None,
                        "plcc_logistic": None, "undefined": reason}],
        "wavg": {"n": 4, "srcc": None, "plcc": None, "plcc_logistic": None}}))
    facts = {"sets": ["held"], "skipped": {"few": "only 2 of 4 image(s) got a valid score"}}
    state.begin("round-1/eval", round=1, kind="eval", command=None, inputs=[], log="x",
                resumed=False)
    state.finish("round-1/eval", outputs=[], summary=steps["round-1/eval"].finish(facts),
                 seconds=1.0)
    lines = render_markdown(ctx, collect(ctx), None).splitlines()
    notes = lines[lines.index("No correlation (shown as —):") + 1:]
    assert notes[:2] == [f"- round 1, held: {reason}",
                         "- round 1, few: only 2 of 4 image(s) got a valid score"]
