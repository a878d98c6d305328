"""``evoq-data eval --prefs``: how often pseudo-labels agree with a known order.

A pair is *decisive* when its p* is known and not 0.5; its predicted better image is
image_a when p* > 0.5. The truth comes from one of:

- a MOS labels manifest or dataset (as for ``eval --scores``): the higher MOS is better;
  pairs with equal MOS have no truth and are counted as ties;
- a synthetic pairs file (``pairs --synthetic``, column ``known_better_id``);
- a ``distort`` folder or its ``distortions.parquet``: two variants of one reference and one
  distortion type (the reference included), lower level better; this also gives the
  accuracy per distortion type.

Accuracy = correct / decisive pairs with a truth, overall and per agreement bucket (the
plot that shows whether higher agreement means better labels). Coverage = decisive / pairs
with a truth: undecided pairs (p* = 0.5 or null) are never counted as right or wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir, write_json_atomic, write_text_atomic
from evoq_data.core.schemas import check_columns
from evoq_data.evaluate.labels import SHOWN_ROWS

log = logging.getLogger(__name__)

PREFS_COLUMNS = ("pair_id", "image_a_id", "image_b_id", "p_star", "agreement")
# Agreement buckets: [lo, hi); the last one is the unanimous pairs.
BUCKETS = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0), (1.0, 1.0))


def bucket_of(agreement: float | None) -> str | None:
    if agreement is None:
        return None
    for lo, hi in BUCKETS:
        if lo == hi == agreement or lo <= agreement < hi:
            return "1.0 (unanimous)" if lo == hi else f"[{lo:.1f}, {hi:.1f})"
    return f"<0.5 ({agreement:.2f})"


def _truth_from_pairs(path: Path) -> tuple[dict, dict]:
    table = pq.read_table(path, columns=["image_a_id", "image_b_id", "known_better_id"])
    truth = {}
    for a, b, better in zip(*(table.column(c).to_pylist() for c in table.column_names),
                            strict=True):
        if better is not None:
            truth[frozenset((a, b))] = better
    return truth, {}


def _truth_from_distortions(path: Path):
    from evoq_data.pairs.synthetic import read_distortions

    rows = read_distortions(path).to_pylist()
    by_id = {r["image_id"]: r for r in rows}

    def judge(a: str, b: str):
        ra, rb = by_id.get(a), by_id.get(b)
        if ra is None or rb is None or ra["reference_id"] != rb["reference_id"]:
            return None
        if ra["level"] == rb["level"]:
            return None
        kinds = {ra["distortion"], rb["distortion"]} - {"reference"}
        if len(kinds) != 1:
            return None  # different types: no known order
        return (a if ra["level"] < rb["level"] else b), kinds.pop()

    return judge


def _truth_from_mos(spec: str, image_column: str, mos_column: str, split: str):
    from evoq_data.evaluate.labels import load_labels

    labels = load_labels(spec, image_column=image_column, mos_column=mos_column, split=split)
    mos = labels.mos

    def judge(a: str, b: str):
        if a not in mos or b not in mos:
            return None
        if mos[a] == mos[b]:
            return "tie", None
        return (a if mos[a] > mos[b] else b), None

    judge.labels = labels  # what the labels left out, for the report
    return judge


def truth_judge(spec: str, *, image_column: str = "image", mos_column: str = "mos",
                split: str = "test"):
    """A function (a_id, b_id) -> (better_id or 'tie', group or None) or None if unknown."""
    _, sep, source = spec.partition("=")
    path = Path(source if sep else spec)
    if path.is_dir() and (path / "distortions.parquet").is_file():
        return _truth_from_distortions(path)
    if path.suffix.lower() == ".parquet" and path.is_file():
        names = pq.read_schema(path).names
        if "known_better_id" in names:
            truth, _ = _truth_from_pairs(path)
            return lambda a, b: ((truth[frozenset((a, b))], None)
                                 if frozenset((a, b)) in truth else None)
        if {"reference_id", "distortion", "level"} <= set(names):
            return _truth_from_distortions(path)
    return _truth_from_mos(spec, image_column, mos_column, split)


def _acc(stats: dict) -> dict:
    return {**stats, "accuracy": stats["correct"] / stats["decisive"] if stats["decisive"]
            else None}


def label_accuracy(prefs_rows: list[dict], judge) -> dict:
    """Counts and accuracies of pseudo-labels against a truth judge."""
    overall = {"pairs": len(prefs_rows), "with_truth": 0, "no_truth": 0, "truth_ties": 0,
               "undecided": 0, "decisive": 0, "correct": 0}
    buckets: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    for row in prefs_rows:
        verdict = judge(row["image_a_id"], row["image_b_id"])
        if verdict is None:
            overall["no_truth"] += 1
            continue
        better, group = verdict
        if better == "tie":
            overall["truth_ties"] += 1
            continue
        overall["with_truth"] += 1
        p = row["p_star"]
        if p is None or p == 0.5:
            overall["undecided"] += 1
            continue
        right = (row["image_a_id"] if p > 0.5 else row["image_b_id"]) == better
        targets = [overall, buckets.setdefault(bucket_of(row["agreement"]) or "none",
                                               {"decisive": 0, "correct": 0})]
        if group is not None:
            targets.append(groups.setdefault(group, {"decisive": 0, "correct": 0}))
        for t in targets:
            t["decisive"] += 1
            t["correct"] += right
    order = [bucket_of(lo) for lo, _ in BUCKETS]
    result = _acc(overall)
    result["coverage"] = (overall["decisive"] / overall["with_truth"] if overall["with_truth"]
                          else None)
    result["by_agreement"] = {k: _acc(buckets[k]) for k in
                              sorted(buckets, key=lambda k: order.index(k) if k in order else -1)}
    result["by_group"] = {k: _acc(v) for k, v in sorted(groups.items())}
    return result


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def accuracy_markdown(result: dict) -> str:
    lines = [f"Pseudo-label accuracy: **{_pct(result['accuracy'])}** "
             f"({result['correct']}/{result['decisive']} decisive pairs with a known order; "
             f"coverage {_pct(result['coverage'])}, {result['undecided']} undecided, "
             f"{result['no_truth']} without a known order, {result['truth_ties']} label ties)",
             "", "| agreement | decisive pairs | accuracy |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['decisive']} | {_pct(v['accuracy'])} |"
              for k, v in result["by_agreement"].items()]
    if result["by_group"]:
        lines += ["", "| distortion | decisive pairs | accuracy |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['decisive']} | {_pct(v['accuracy'])} |"
                  for k, v in result["by_group"].items()]
    if result.get("warnings"):
        lines += ["", *[f"- warning: {w}" for w in result["warnings"]]]
    return "\n".join(lines) + "\n"


def accuracy_plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    empty = {"decisive": 0, "correct": 0, "accuracy": None}
    every_bucket = {bucket_of(lo): result["by_agreement"].get(bucket_of(lo), empty)
                    for lo, _ in BUCKETS}
    panels = [("agreement bucket", {**every_bucket, **result["by_agreement"]})]
    if result["by_group"]:
        panels.append(("distortion", result["by_group"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels, strict=True):
        names = list(data)
        acc = [data[k]["accuracy"] or 0.0 for k in names]
        bars = ax.bar(range(len(names)), acc, color="C0")
        for bar, k in zip(bars, names, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                    f"n={data[k]['decisive']}", ha="center", fontsize=7)
        ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel(title)
        ax.set_ylabel("pseudo-label accuracy")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"accuracy {_pct(result['accuracy'])} over {result['decisive']} decisive pairs",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _published(prefs: Path) -> bool:
    """A pushed dataset: a folder with evoq.json and no preferences.parquet, or a Hub id."""
    if prefs.is_dir():
        return (prefs / "evoq.json").is_file() and not (prefs / "preferences.parquet").exists()
    text = str(prefs)
    return (not prefs.exists() and text.count("/") == 1 and not text.startswith((".", "/"))
            and prefs.suffix.lower() != ".parquet")


def run_label_accuracy(prefs: str | Path, labels: str, out: str | Path, *,
                       image_column: str = "image", mos_column: str = "mos",
                       split: str = "test") -> dict:
    """``evoq-data eval --prefs``: accuracy.md, accuracy.json, accuracy.png under OUT."""
    prefs = Path(prefs)
    path = prefs / "preferences.parquet" if prefs.is_dir() else prefs
    if _published(prefs):  # a dataset evoq-data push wrote (a folder or a Hub id), any layout
        from evoq_data.load import preference_rows

        rows, path = preference_rows(prefs, list(PREFS_COLUMNS)), prefs
    else:
        if not path.exists():
            raise EvoqError(f"no preferences.parquet in {prefs}; make it with "
                            "`evoq-data aggregate` (or give a dataset `evoq-data push` wrote)")
        check_columns(path, PREFS_COLUMNS, "preferences")
        rows = pq.read_table(path, columns=list(PREFS_COLUMNS)).to_pylist()
    judge = truth_judge(labels, image_column=image_column, mos_column=mos_column, split=split)
    result = label_accuracy(rows, judge)
    source = getattr(judge, "labels", None)
    if source is not None:
        result["dropped_label_rows"] = {"count": len(source.dropped_rows),
                                        "rows": source.dropped_rows[:SHOWN_ROWS]}
        result["merged_duplicate_rows"] = source.merged_duplicates
    result["warnings"] = list(source.warnings) if source is not None else []
    if result["with_truth"] == 0:
        raise EvoqError(f"no pair of {path} has a known order in {labels}; "
                        "are they the same images?")
    out = make_output_dir(out)
    md = accuracy_markdown(result)
    write_text_atomic(md, out / "accuracy.md")
    write_json_atomic({"prefs": str(path), "labels": labels, **result}, out / "accuracy.json")
    plot = accuracy_plot(result, out / "accuracy.png")
    return {"markdown": md, "accuracy": result["accuracy"], "result": result,
            "json": str(out / "accuracy.json"), "table": str(out / "accuracy.md"),
            "plot": str(plot)}
