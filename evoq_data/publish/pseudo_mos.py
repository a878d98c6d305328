"""The ``pseudo_mos`` config: one row per image, its Bradley–Terry score as a 1–5 pseudo-MOS.

``evoq-data aggregate`` fits Bradley–Terry log-strengths ``theta`` (``bt_score`` in
``images``: penalised maximum likelihood with ``alpha * sum(theta**2)`` over the decisive kept
pairs, :mod:`evoq_data.aggregate.bradley_terry`). Here:

- the interval is the Laplace approximation at that optimum: the standard error of
  ``theta_i`` is ``sqrt((H^-1)_ii)`` with ``H = 2 alpha I + sum_k s_k (1 - s_k) d_k d_k^T``
  the Hessian of the penalised objective (``s_k`` the fitted win probability of comparison
  k, ``d_k = e_winner - e_loser``), and the 95 % interval ``theta +- 1.959964 se``;
- the 1–5 scale of the score prompt is ``pseudo_mos = 1 + 4 * sigmoid(theta)``: 1 plus 4
  times the fitted probability that the image beats an image of average strength
  (theta = 0, the centre of the scores), so an average image maps to 3 and the map is
  monotone (SRCC against any MOS is that of ``bt_score``); the interval's ends map the same
  way.

The published ``bt_score`` is checked to be the optimum of these comparisons (gradient below
1e-3), so the interval belongs to the published scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from evoq_data.core.errors import EvoqError

Z95 = 1.959963984540054
GRAD_TOL = 1e-3
COLUMNS = ("image_id", "image_path", "pseudo_mos", "pseudo_mos_low", "pseudo_mos_high",
           "bt_score", "bt_low", "bt_high", "bt_se", "comparisons", "decisive_comparisons")


def to_mos_scale(theta):
    """Bradley–Terry log-strength -> the 1–5 scale: 1 + 4 * sigmoid(theta)."""
    return 1.0 + 4.0 / (1.0 + np.exp(-np.asarray(theta, float)))


def decisive_edges(prefs: pa.Table, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(winner, loser) indexes of the decisive kept pairs, as the aggregate's fit uses them."""
    w, lo = [], []
    for a, b, va, vb in zip(*(prefs.column(c).to_pylist() for c in
                              ("image_a_id", "image_b_id", "votes_a", "votes_b")), strict=True):
        if va == vb:
            continue
        if a not in index or b not in index:
            raise EvoqError(f"--export pseudo_mos: pair of {a[:12]} and {b[:12]} names an image "
                            "missing from images.parquet")
        w.append(index[a] if va > vb else index[b])
        lo.append(index[b] if va > vb else index[a])
    return np.asarray(w, np.int64), np.asarray(lo, np.int64)


def laplace_se(theta: np.ndarray, w: np.ndarray, lo: np.ndarray, alpha: float) -> np.ndarray:
    """Standard errors sqrt(diag(H^-1)) of the penalised Bradley–Terry fit at ``theta``."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    n = len(theta)
    s = 1.0 / (1.0 + np.exp(-(theta[w] - theta[lo])))
    c = s * (1.0 - s)
    rows = np.concatenate([w, lo, w, lo])
    cols = np.concatenate([w, lo, lo, w])
    vals = np.concatenate([c, c, -c, -c])
    h = sp.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsc() + 2 * alpha * sp.identity(
        n, format="csc")
    lu = splu(h.tocsc())
    diag = np.empty(n)
    for start in range(0, n, 256):
        stop = min(n, start + 256)
        eye = np.zeros((n, stop - start))
        eye[np.arange(start, stop), np.arange(stop - start)] = 1.0
        diag[start:stop] = lu.solve(eye)[np.arange(start, stop), np.arange(stop - start)]
    return np.sqrt(diag)


def pseudo_mos_table(prefs: pa.Table, images: pa.Table, alpha: float) -> pa.Table:
    """The rows of ``pseudo_mos`` (without image bytes), in the order of ``images``."""
    ids = images.column("image_id").to_pylist()
    index = {i: k for k, i in enumerate(ids)}
    w, lo = decisive_edges(prefs, index)
    published = np.array([np.nan if v is None else v
                          for v in images.column("bt_score").to_pylist()], float)
    scored = ~np.isnan(published)
    compared = np.bincount(np.concatenate([w, lo]), minlength=len(ids)) > 0
    if not np.array_equal(scored, compared):
        raise EvoqError("--export pseudo_mos: images.parquet gives a bt_score to other images "
                        "than those with a decisive comparison; re-run `evoq-data aggregate`")
    theta = np.where(scored, published, 0.0)
    if len(w):
        d = theta[w] - theta[lo]
        z = 1.0 / (1.0 + np.exp(d))
        grad = 2 * alpha * theta - np.bincount(w, z, len(ids)) + np.bincount(lo, z, len(ids))
        worst = float(np.abs(grad[scored]).max())
        if worst > GRAD_TOL:
            raise EvoqError(f"--export pseudo_mos: images.parquet's bt_score is not the "
                            f"Bradley–Terry fit of preferences.parquet with alpha {alpha} "
                            f"(gradient {worst:.2g}); re-run `evoq-data aggregate`")
    se = laplace_se(theta, w, lo, alpha) if len(w) else np.full(len(ids), np.nan)

    def col(values):
        return pa.array([float(v) if ok and math.isfinite(v) else None
                         for v, ok in zip(values, scored, strict=True)], pa.float64())

    low, high = theta - Z95 * se, theta + Z95 * se
    decisive = np.bincount(np.concatenate([w, lo]), minlength=len(ids))
    return pa.table({
        "image_id": images.column("image_id"), "image_path": images.column("image_path"),
        "pseudo_mos": col(to_mos_scale(theta)), "pseudo_mos_low": col(to_mos_scale(low)),
        "pseudo_mos_high": col(to_mos_scale(high)), "bt_score": col(theta),
        "bt_low": col(low), "bt_high": col(high), "bt_se": col(se),
        "comparisons": images.column("comparisons").cast(pa.int64()),
        "decisive_comparisons": pa.array(decisive.astype(np.int64)),
    })


def alpha_of(src: dict) -> float:
    """The penalty the aggregate fitted with (older manifests: evoq's default)."""
    from evoq_data.aggregate.bradley_terry import DEFAULT_BT_ALPHA

    bt = ((src.get("stats") or {}).get("images") or {}).get("bradley_terry") or {}
    return float(src["manifest"].get("bt_alpha") or bt.get("alpha") or DEFAULT_BT_ALPHA)


def write_pseudo_mos(src: dict, folder: Path, *, layout: str, files: dict[str, Path],
                     keep) -> tuple[dict, dict]:
    """Write config ``pseudo_mos``: with ``embed`` the image itself (after ``image_id``),
    with ``once`` and ``none`` the id and path only (``once``: the image is in ``images``)."""
    from evoq_data.publish.tables import hf_schema, image_struct, with_features, write_config

    alpha = alpha_of(src)
    table = keep(pseudo_mos_table(src["preferences"], src["images"], alpha))

    def build():
        if layout != "embed":
            return [hf_schema(table)]
        cells = [image_struct(i, files[i]) for i in table.column("image_id").to_pylist()]
        return [with_features(table, {"image": cells}, after="image_id")]

    conf = write_config("pseudo_mos", [build], folder, 100)
    scored = table.column("pseudo_mos").null_count
    return conf, {"images": table.num_rows, "scored": table.num_rows - scored,
                  "unscored_no_decisive_comparison": scored, "bt_alpha": alpha,
                  "scale": "1 + 4 * sigmoid(bt_score)",
                  "interval": "95% Laplace (Hessian of the penalised fit)"}
