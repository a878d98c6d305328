"""``evoq-data eval``: zero-shot metrics of scores against human MOS, per benchmark.

Metrics (docs/method.md): SRCC (``scipy.stats.spearmanr``), PLCC on the raw scores
(pyiqa / Q-Align) and PLCC after the 4-parameter logistic
``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2`` fitted by least squares from
``[max y, min y, mean x, std x / 4]`` (DeQA-Score). The weighted average weights each
benchmark by its number of evaluated images (its test-set size).

Labels are matched to scores by image content (sha256 of the file bytes, evoq's image id), so
a labels manifest may name files anywhere. The pseudo-label accuracy of a PREFS_DIR
(``eval --prefs``) lives in :mod:`evoq_data.evaluate.accuracy`.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir, write_json_atomic, write_text_atomic
from evoq_data.core.schemas import check_columns
from evoq_data.evaluate.labels import BENCHMARKS, SHOWN_ROWS, Labels, benchmark_key, load_labels

log = logging.getLogger(__name__)

MIN_MATCHED = 3
# --- metrics -----------------------------------------------------------------------------

def logistic4(x, b1, b2, b3, b4):
    """The 4-parameter logistic of DeQA-Score's PLCC."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / b4)) + b2


def fit_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least-squares fit of :func:`logistic4`; None when it does not converge."""
    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = np.asarray(x, float), np.asarray(y, float)
    scale = float(np.std(x)) / 4.0 or 1.0
    p0 = [float(np.max(y)), float(np.min(y)), float(np.mean(x)), scale]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError, TypeError) as exc:
        log.warning("4-parameter logistic fit failed (%s)", exc)
        return None
    return params if np.all(np.isfinite(params)) else None


def undefined_reason(pred, mos) -> str | None:
    """Why a rank or linear correlation has no value: one side holds a single value (a
    model that answers one score for every image, or labels that are all equal)."""
    x, y = np.asarray(pred, float), np.asarray(mos, float)
    if x.size and np.ptp(x) == 0:
        return (f"every one of the {x.size} images got the same score ({x[0]:g}), so SRCC "
                "and PLCC are undefined")
    if y.size and np.ptp(y) == 0:
        return f"all {y.size} labels are equal ({y[0]:g}), so SRCC and PLCC are undefined"
    return None


def correlations(pred, mos) -> dict:
    """SRCC, raw PLCC and logistic PLCC of predictions against MOS (needs 3+ points);
    ``undefined`` says why they are None when one side is constant."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(pred, float), np.asarray(mos, float)
    if x.size < MIN_MATCHED:
        raise EvoqError(f"a correlation needs at least {MIN_MATCHED} images, got {x.size}")

    def safe(value) -> float | None:
        value = float(value)
        return value if math.isfinite(value) else None

    undefined = undefined_reason(x, y)
    if undefined is not None:  # scipy would warn and return nan
        return {"n": int(x.size), "srcc": None, "plcc": None, "plcc_logistic": None,
                "logistic_params": None, "undefined": undefined}
    srcc, plcc = spearmanr(x, y).statistic, pearsonr(x, y).statistic
    params = fit_logistic(x, y) if x.size > 4 else None
    plcc_log = None
    if params is not None:
        with np.errstate(all="ignore"):
            fitted = logistic4(x, *params)
        if np.std(fitted) > 0:
            plcc_log = safe(pearsonr(fitted, y).statistic)
    return {"n": int(x.size), "srcc": safe(srcc), "plcc": safe(plcc),
            "plcc_logistic": plcc_log,
            "logistic_params": None if params is None else [float(p) for p in params],
            "undefined": None}


def load_scores(path: str | Path) -> dict[str, float]:
    """image_id -> mean valid score, from scores.parquet or its .summary.parquet; or the
    pseudo-MOS of a ``pseudo_mos`` config (its Parquet file or the pushed dataset folder)."""
    from evoq_data.evaluate.score import summarize

    path = Path(path)
    if path.is_dir():  # a dataset `evoq-data push --export pseudo_mos` wrote
        from evoq_data.load import pseudo_mos_scores

        return pseudo_mos_scores(path)
    schema = check_columns(path, ("image_id",), "scores")
    if "pseudo_mos" in schema.names and "score_mean" not in schema.names:
        table = pq.read_table(path, columns=["image_id", "pseudo_mos"]).rename_columns(
            ["image_id", "score_mean"])
    elif "score_mean" in schema.names:
        table = pq.read_table(path, columns=["image_id", "score_mean"])
    else:
        check_columns(path, ("image_id", "image_path", "score"), "scores")
        table = summarize(pq.read_table(path, columns=["image_id", "image_path", "score"]))
    return {i: s for i, s in zip(table.column("image_id").to_pylist(),
                                 table.column("score_mean").to_pylist(), strict=True)
            if s is not None}


# --- the eval command --------------------------------------------------------------------

def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def evaluate_scores(scores: dict[str, float], labels: Labels) -> dict:
    """Metrics of one benchmark, with the matching counts and the registry check."""
    ids = [i for i in labels.mos if i in scores]
    if len(ids) < MIN_MATCHED:
        raise EvoqError(f"only {len(ids)} image(s) of labels {labels.name} ({labels.source}) "
                        f"have a valid score; a correlation needs at least {MIN_MATCHED}")
    result = {"benchmark": labels.name, "labels": labels.source, "label_rows": labels.rows,
              "matched": len(ids), "unmatched_labels": len(labels.mos) - len(ids),
              "dropped_label_rows": {"count": len(labels.dropped_rows),
                                     "rows": labels.dropped_rows[:SHOWN_ROWS]},
              "merged_duplicate_rows": labels.merged_duplicates,
              **correlations([scores[i] for i in ids], [labels.mos[i] for i in ids]),
              "warnings": list(labels.warnings)}
    if result["undefined"]:
        result["warnings"].append(f"{labels.name}: {result['undefined']}")
    key = benchmark_key(labels.name)
    if key is not None:
        display, expected = BENCHMARKS[key]
        result["registry"] = {"benchmark": display, "expected_size": expected}
        if labels.rows != expected:
            msg = (f"{labels.name}: the labels hold {labels.rows} images but {display}'s test "
                   f"split has {expected}; numbers are not comparable to published ones")
            log.warning(msg)
            result["warnings"].append(msg)
    result["_xy"] = ([scores[i] for i in ids], [labels.mos[i] for i in ids])
    return result


def weighted_average(results: list[dict]) -> dict:
    """Each metric averaged over benchmarks, weighted by their evaluated images."""
    out = {"n": int(sum(r["n"] for r in results))}
    for metric in ("srcc", "plcc", "plcc_logistic"):
        pairs = [(r[metric], r["n"]) for r in results if r[metric] is not None]
        total = sum(w for _, w in pairs)
        out[metric] = sum(v * w for v, w in pairs) / total if total else None
    return out


def metrics_markdown(results: list[dict], wavg: dict) -> str:
    lines = ["| benchmark | images | SRCC | PLCC (raw) | PLCC (4-param logistic) "
             "| label rows left out |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['benchmark']} | {r['n']} | {_fmt(r['srcc'])} | {_fmt(r['plcc'])} "
                     f"| {_fmt(r['plcc_logistic'])} | {r['dropped_label_rows']['count']} |")
    lines.append(f"| WAVG (weighted by test-set size) | {wavg['n']} | {_fmt(wavg['srcc'])} | "
                 f"{_fmt(wavg['plcc'])} | {_fmt(wavg['plcc_logistic'])} | |")
    notes = [w for r in results for w in r["warnings"]]
    lines += ["", "WAVG weights each benchmark by its number of evaluated images.",
              *[f"- warning: {w}" for w in notes]]
    return "\n".join(lines) + "\n"


def scatter_plot(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.6), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        x, y = (np.asarray(v, float) for v in r["_xy"])
        ax.scatter(x, y, s=8, alpha=0.6)
        if r["logistic_params"] is not None:
            grid = np.linspace(x.min(), x.max(), 200)
            ax.plot(grid, logistic4(grid, *r["logistic_params"]), color="C3", lw=1.5,
                    label="4-param logistic")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{r['benchmark']}  SRCC {_fmt(r['srcc'])}  PLCC {_fmt(r['plcc'])}",
                     fontsize=9)
        ax.set_xlabel("predicted score (mean of valid samples)")
        ax.set_ylabel("MOS")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_eval(scores: str | Path, labels: list[str], out: str | Path, *,
             image_column: str = "image", mos_column: str = "mos",
             split: str = "test") -> dict:
    """The ``evoq-data eval --scores`` command: metrics.md, metrics.json, scatter.png."""
    if not labels:
        raise EvoqError("give at least one --labels NAME=SOURCE")
    table = load_scores(scores)
    results = [evaluate_scores(table, load_labels(spec, image_column=image_column,
                                                  mos_column=mos_column, split=split))
               for spec in labels]
    wavg = weighted_average(results)
    out = make_output_dir(out)
    md = metrics_markdown(results, wavg)
    write_text_atomic(md, out / "metrics.md")
    plot = scatter_plot(results, out / "scatter.png")
    clean = [{k: v for k, v in r.items() if k != "_xy"} for r in results]
    doc = {"scores": str(scores), "benchmarks": clean, "wavg": wavg,
           "wavg_weighting": "number of evaluated images per benchmark (test-set size)"}
    write_json_atomic(doc, out / "metrics.json")
    return {"markdown": md, "metrics": str(out / "metrics.json"),
            "table": str(out / "metrics.md"), "plot": str(plot), "benchmarks": clean,
            "wavg": wavg}
