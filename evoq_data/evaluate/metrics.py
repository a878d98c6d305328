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

import hashlib
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.io import csv_delimiter, make_output_dir, write_json_atomic, write_text_atomic
from evoq_data.core.schemas import check_columns

log = logging.getLogger(__name__)

MIN_MATCHED = 3
# name -> (display name, expected test-set size) for DeQA-Score's splits (docs/method.md).
BENCHMARKS = {
    "koniq": ("KonIQ", 2000), "spaq": ("SPAQ", 2000), "kadid": ("KADID-10k", 2000),
    "pipal": ("PIPAL", 5000), "livew": ("LIVE-Wild", 1162), "agiqa": ("AGIQA-3K", 2982),
    "tid2013": ("TID2013", 3000), "csiq": ("CSIQ", 866),
}
_ALIASES = {"koniq10k": "koniq", "kadid10k": "kadid", "livewild": "livew",
            "livechallenge": "livew", "livec": "livew", "agiqa3k": "agiqa", "tid": "tid2013",
            "tid13": "tid2013"}
PATH_COLUMNS = ("path", "image_path", "image", "file", "filename")


def benchmark_key(name: str) -> str | None:
    """The registry key a labels name refers to (case and punctuation ignored), or None."""
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    norm = _ALIASES.get(norm, norm)
    return norm if norm in BENCHMARKS else None


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


def correlations(pred, mos) -> dict:
    """SRCC, raw PLCC and logistic PLCC of predictions against MOS (needs 3+ points)."""
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(pred, float), np.asarray(mos, float)
    if x.size < MIN_MATCHED:
        raise EvoqError(f"a correlation needs at least {MIN_MATCHED} images, got {x.size}")

    def safe(value) -> float | None:
        value = float(value)
        return value if math.isfinite(value) else None

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
            "logistic_params": None if params is None else [float(p) for p in params]}


# --- inputs ------------------------------------------------------------------------------

def file_id(path: str | Path) -> str:
    """evoq's image id of a file: the sha256 of its bytes (the one rule, core.ids)."""
    return file_sha256(path)


SHOWN_ROWS = 10  # row numbers named in a warning or an error, then a count


@dataclass
class Labels:
    name: str
    source: str
    mos: dict[str, float]  # image_id -> MOS
    rows: int              # rows in the labels source (for the registry check)
    dropped_rows: list[int] = field(default_factory=list)  # rows (from 1) without a MOS
    merged_duplicates: int = 0  # rows repeating an image with the same MOS
    warnings: list[str] = field(default_factory=list)


def _read_table(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            parse = pacsv.ParseOptions(delimiter=csv_delimiter(path))
            return pacsv.read_csv(path, parse_options=parse)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvoqError(f"cannot read labels file {path}: {exc}") from exc


def _column(table: pa.Table, wanted: str) -> str | None:
    by_lower = {c.lower(): c for c in table.column_names}
    return by_lower.get(wanted.lower())


def _mos_values(table: pa.Table, mos_column: str, source: str) -> list:
    col = _column(table, mos_column)
    if col is None:
        raise EvoqError(f"labels {source} have no {mos_column!r} column (columns: "
                        f"{', '.join(table.column_names)}); pass --mos-column")
    try:
        return table.column(col).cast(pa.float64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        hint = ""
        if str(source).lower().endswith(".csv") and csv_delimiter(Path(source)) == ";":
            hint = " (the file looks ;-delimited with ',' as the decimal mark: save it " \
                   "with '.' decimals)"
        raise EvoqError(f"labels {source}: column {col!r} is not numeric{hint} ({exc})") from exc


def _manifest_labels(path: Path, mos_column: str) -> tuple[list[str], list, list[str]]:
    """Image ids, MOS values and what each row names (its path or image id)."""
    table = _read_table(path)
    mos = _mos_values(table, mos_column, str(path))
    id_col = _column(table, "image_id")
    if id_col is not None:
        ids = [str(v) for v in table.column(id_col).to_pylist()]
        return ids, mos, [f"image_id {i}" for i in ids]
    path_col = next((c for c in (_column(table, p) for p in PATH_COLUMNS) if c), None)
    if path_col is None:
        raise EvoqError(f"labels {path} need an image_id or a path column "
                        f"({', '.join(PATH_COLUMNS)}); columns: {', '.join(table.column_names)}")
    named = [str(p) for p in table.column(path_col).to_pylist()]
    files = [Path(p).expanduser() for p in named]
    files = [f if f.is_absolute() else path.parent / f for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise EvoqError(f"{len(missing)} image path(s) in labels {path} do not exist: {shown}")
    return [file_id(f) for f in files], mos, [f"path {p}" for p in named]


def _dataset_labels(source: str, image_column: str, mos_column: str,
                    split: str) -> tuple[list[str], list]:
    import datasets

    path = Path(source)
    try:
        if path.is_dir() and any((path / m).is_file() for m in ("dataset_info.json",
                                                                 "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(source, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types
        raise EvoqError(f"cannot load labels dataset {source!r} (split {split!r}): {exc}") from exc
    if image_column not in ds.column_names:
        raise EvoqError(f"labels dataset {source} has no {image_column!r} column (columns: "
                        f"{', '.join(ds.column_names)}); pass --image-column")
    col = next((c for c in ds.column_names if c.lower() == mos_column.lower()), None)
    if col is None:
        raise EvoqError(f"labels {source} have no {mos_column!r} column (columns: "
                        f"{', '.join(ds.column_names)}); pass --mos-column")
    mos = _mos_values(pa.table({col: ds[col]}), col, source)
    try:
        cells = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
    except (ValueError, TypeError, NotImplementedError) as exc:  # pyarrow's cast errors
        raise EvoqError(f"column {image_column!r} of labels dataset {source} does not hold "
                        f"images ({ds.features[image_column]}); pass --image-column") from exc
    ids = []
    for cell in cells:
        data = (cell or {}).get("bytes")
        if data is None and (cell or {}).get("path"):
            data = Path(cell["path"]).read_bytes()
        if data is None:
            raise EvoqError(f"labels dataset {source} has an empty {image_column!r} cell")
        ids.append(hashlib.sha256(data).hexdigest())
    return ids, mos, [f"image {i[:12]}" for i in ids]


def load_labels(spec: str, *, image_column: str = "image", mos_column: str = "mos",
                split: str = "test") -> Labels:
    """``NAME=SOURCE`` or ``SOURCE``: a CSV/TSV/Parquet manifest or a HF dataset with MOS."""
    name, sep, source = spec.partition("=")
    if not sep:
        name, source = Path(spec).stem or spec, spec
    path = Path(source)
    if path.suffix.lower() in (".csv", ".tsv", ".parquet"):
        if not path.is_file():
            raise EvoqError(f"labels file not found: {path}")
        ids, mos, keys = _manifest_labels(path, mos_column)
    elif path.exists() or "/" in source:
        ids, mos, keys = _dataset_labels(source, image_column, mos_column, split)
    else:
        raise EvoqError(f"labels not found: {source} (a .csv/.tsv/.parquet manifest or a "
                        "dataset folder or Hub id)")
    return check_label_rows(name, source, ids, mos, keys)


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def check_label_rows(name: str, source: str, ids: list[str], mos: list, keys: list[str]) -> Labels:
    """One MOS per image: rows without a usable MOS (empty, NaN, infinite) are left out and
    reported; an image listed twice with the same MOS is merged and reported; an image listed
    with two different MOS values is refused, naming both rows. Rows count from 1 (the
    header is not a row: in a CSV, row N is on line N + 1)."""
    labels: dict[str, float] = {}
    first: dict[str, int] = {}
    dropped: list[int] = []
    merged = 0
    for row, (image, value, key) in enumerate(zip(ids, mos, keys, strict=True), start=1):
        if value is None or not math.isfinite(value):
            dropped.append(row)
            continue
        value = float(value)
        if image in labels:
            if labels[image] != value:
                was = first[image]
                same = keys[was - 1] == key
                what = key if same else f"{keys[was - 1]} and {key} (the same image bytes)"
                raise EvoqError(
                    f"labels {source} list {what} twice with different MOS: {labels[image]:g} "
                    f"(row {was}) and {value:g} (row {row}); keep one MOS per image")
            merged += 1
            continue
        labels[image], first[image] = value, row
    warnings = []
    if dropped:
        warnings.append(f"{name}: {len(dropped)} label row(s) without a usable MOS (empty or "
                        f"not a finite number) were left out: row(s) {_rows_text(dropped)}")
    if merged:
        warnings.append(f"{name}: {merged} label row(s) repeat an image with the same MOS and "
                        "were merged")
    for w in warnings:
        log.warning(w)
    return Labels(name=name, source=source, mos=labels, rows=len(ids), dropped_rows=dropped,
                  merged_duplicates=merged, warnings=warnings)


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
