"""`evoq-data aggregate` on hand-computed vote fixtures: exact rows, stats, files, bad input."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error as assert_error
from typer.testing import CliRunner

from evoq_data.aggregate import fit_bradley_terry
from evoq_data.aggregate.run import IMAGE_COLUMNS, PREFERENCE_COLUMNS, Z95
from evoq_data.cli import app
from evoq_data.core.schemas import VOTES_SCHEMA

PROVENANCE = {"model": "tiny/model", "model_revision": "rev1", "engine": "transformers",
              "prompt_id": "compare-reasoning", "prompt_sha256": "ab" * 32,
              "temperature": 1.0, "top_p": 1.0, "max_tokens": 64}
STATUS = {None: "no_box"}

# (pair_id, image_a, image_b, [(swapped, answer, parse_status), ...]); answer indexes the
# shown order: swapped=True showed image b first.
PAIRS = [
    ("p1", "A", "B", [(False, 0, "ok"), (False, 0, "ok"), (True, 1, "ok"), (True, 0, "ok")]),
    ("p2", "B", "C", [(False, 0, "ok"), (True, 1, "ok"), (True, 0, "ok"),
                      (False, None, "no_box")]),
    ("p3", "C", "A", [(False, 0, "ok"), (True, 1, "ok"), (False, 0, "ok"), (True, 1, "ok")]),
    ("p4", "A", "D", [(False, None, "empty"), (True, None, "no_answer"),
                      (False, None, "out_of_range"), (True, None, "not_a_number")]),
    ("p5", "D", "B", [(False, 0, "ok"), (False, 1, "ok"), (True, 0, "ok"), (True, 1, "ok")]),
    ("p6", "E", "D", [(False, 1, "ok"), (False, 1, "ok"), (True, 0, "ok"), (False, 0, "ok")]),
]


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson interval written as (k + z^2/2) / (n + z^2) +- z sqrt(n) / (n + z^2) * ..."""
    z = Z95
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt((k / n) * (1 - k / n) + z * z / (4 * n))
    return centre - half, centre + half


def vote_rows(pairs, provenance=None, start_index: int = 0, k: int | None = 4,
              stop_reason: str | None = "fixed") -> list[dict]:
    """Vote rows of ``pairs`` as evoq-data vote writes them (votes_planned = k, the given
    stop_reason, no probabilities); k=None leaves the stopping columns null."""
    prov = {**PROVENANCE, **(provenance or {})}
    rows = []
    for pair_id, a, b, votes in pairs:
        for i, (swapped, answer, status) in enumerate(votes):
            shown = (b, a) if swapped else (a, b)
            rows.append({
                "pair_id": pair_id, "vote_index": start_index + i, "image_a_id": a,
                "image_b_id": b, "image_a_path": f"/img/{a}.png",
                "image_b_path": f"/img/{b}.png", "swapped": swapped,
                "raw_text": f"<think>...</think> \\boxed{{{answer}}}", "answer": answer,
                "winner_id": None if answer is None else shown[answer],
                "parse_status": status, **prov, "seed": 100 + i,
                "votes_planned": k, "stop_reason": None if k is None else stop_reason,
                "created_at": datetime(2026, 11, 26, tzinfo=UTC), "evoq_version": "0.1.0",
            })
    return rows


LEGACY_SCHEMA = pa.schema([f for f in VOTES_SCHEMA if f.name not in (
    "votes_planned", "stop_reason", "prob_0", "prob_1")])


def write_pairs(path: Path, pairs) -> Path:
    """A pairs file listing ``pairs`` ((pair_id, a, b, ...) tuples) as evoq-data pairs does."""
    pq.write_table(pa.table({
        "pair_id": [p[0] for p in pairs], "image_a_id": [p[1] for p in pairs],
        "image_a_path": [f"/img/{p[1]}.png" for p in pairs],
        "image_b_id": [p[2] for p in pairs],
        "image_b_path": [f"/img/{p[2]}.png" for p in pairs]}), path)
    return path


def write_votes(folder: Path, shards: list[list[dict]], manifest: dict | None = None,
                pairs=None, legacy: bool = False) -> Path:
    """VOTES_DIR with one shard per row list, a pairs file beside it (``pairs``, default:
    the pairs of the rows) named with its sha256 in manifest.json. ``legacy``: shards
    without the stopping columns (written before they existed)."""
    from evoq_data.core.ids import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    for i, rows in enumerate(shards):
        table = pa.Table.from_pylist(rows, schema=LEGACY_SCHEMA if legacy else VOTES_SCHEMA)
        pq.write_table(table, folder / f"votes-00000-of-00001-{i:016x}.parquet")
    if pairs is None:
        seen = {}
        for r in (r for rows in shards for r in rows):
            seen.setdefault(r["pair_id"], (r["pair_id"], r["image_a_id"], r["image_b_id"]))
        pairs = sorted(seen.values())
    pairs_path = write_pairs(folder.parent / f"{folder.name}-pairs.parquet", pairs)
    man = {"stage": "vote", **PROVENANCE, "seed": 0, "votes_per_pair": 4, "order": "random",
           "reasoning": True, "pairs_file": str(pairs_path),
           "pairs_sha256": file_sha256(pairs_path), **(manifest or {})}
    (folder / "manifest.json").write_text(json.dumps(man))
    return folder


@pytest.fixture
def votes_dir(tmp_path) -> Path:
    rows = vote_rows(PAIRS)
    return write_votes(tmp_path / "votes", [rows[:10], rows[10:]])


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)




def run_cli(votes: Path, out: Path, *extra: str) -> dict:
    result = invoke(["aggregate", "--votes", str(votes), "--out", str(out), "--quiet", *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


# Expected preferences, computed by hand from PAIRS.
# pair: votes_a, votes_b, invalid, total, p_star (hard), votes_first_shown
EXPECTED = {
    "p1": (3, 1, 0, 4, 1.0, 3),
    "p2": (2, 1, 1, 4, 1.0, 2),
    "p3": (4, 0, 0, 4, 1.0, 2),
    "p4": (0, 0, 4, 4, None, 0),
    "p5": (2, 2, 0, 4, 0.5, 2),
    "p6": (1, 3, 0, 4, 0.0, 2),
}


def test_preferences_exact_rows(votes_dir, tmp_path):
    summary = run_cli(votes_dir, tmp_path / "prefs")
    table = pq.read_table(tmp_path / "prefs" / "preferences.parquet")
    assert tuple(table.column_names) == PREFERENCE_COLUMNS
    for name in ("votes_a", "votes_b", "invalid_votes", "total_votes", "votes_first_shown"):
        assert table.schema.field(name).type == pa.int64()
    for name in ("p_star", "vote_fraction_a", "agreement", "wilson_low", "wilson_high"):
        assert table.schema.field(name).type == pa.float64()
    rows = table.to_pylist()
    assert [r["pair_id"] for r in rows] == list(EXPECTED)
    for r in rows:
        va, vb, inv, tot, p_star, first = EXPECTED[r["pair_id"]]
        assert (r["votes_a"], r["votes_b"], r["invalid_votes"], r["total_votes"],
                r["p_star"], r["votes_first_shown"]) == (va, vb, inv, tot, p_star, first)
        if va + vb == 0:
            assert r["vote_fraction_a"] is r["agreement"] is r["wilson_low"] is None
            continue
        assert r["vote_fraction_a"] == pytest.approx(va / (va + vb))
        assert r["agreement"] == pytest.approx(max(va, vb) / (va + vb))
        lo, hi = wilson(max(va, vb), va + vb)
        assert (r["wilson_low"], r["wilson_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert rows[0]["image_a_path"] == "/img/A.png" and rows[0]["image_b_id"] == "B"
    assert summary["pairs"] == summary["pairs_kept"] == 6
    assert summary["votes"] == 24 and summary["invalid_votes"] == 5
    assert not (tmp_path / "prefs" / "filtered_out.parquet").exists()
    # a textbook value: 3 of 4 -> [0.3006, 0.9544]
    p1 = rows[0]
    assert (round(p1["wilson_low"], 4), round(p1["wilson_high"], 4)) == (0.3006, 0.9544)


def test_soft_labels(votes_dir, tmp_path):
    run_cli(votes_dir, tmp_path / "prefs", "--label", "soft")
    rows = {r["pair_id"]: r["p_star"] for r in
            pq.read_table(tmp_path / "prefs" / "preferences.parquet").to_pylist()}
    assert rows == {"p1": 0.75, "p2": pytest.approx(2 / 3), "p3": 1.0, "p4": None,
                    "p5": 0.5, "p6": 0.25}


def test_stats_images_plots_manifest(votes_dir, tmp_path):
    out = tmp_path / "prefs"
    run_cli(votes_dir, out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["votes"] == {"total": 24, "valid": 19, "invalid": 5,
                              "invalid_rate": 5 / 24,
                              "by_parse_status": {"ok": 19, "no_box": 1, "empty": 1,
                                                  "no_answer": 1, "out_of_range": 1,
                                                  "not_a_number": 1}}
    p = stats["pairs"]
    assert (p["total"], p["kept"], p["without_valid_votes"], p["ties"], p["decisive"]) == (
        6, 6, 1, 1, 4)
    assert p["tie_rate"] == pytest.approx(1 / 5)
    bias = stats["position_bias"]
    assert (bias["first_shown_votes"], bias["valid_votes"]) == (11, 19)
    assert bias["share_first_shown"] == pytest.approx(11 / 19)
    assert (bias["wilson_low"], bias["wilson_high"]) == tuple(map(pytest.approx, wilson(11, 19)))
    hist = stats["agreement"]["histogram"]
    assert len(hist) == 10 and sum(h["pairs"] for h in hist) == 5
    # agreements 0.75, 2/3, 1, 0.5, 0.75 -> bins [0.5,.55), [.65,.7), [.75,.8) x2, [.95,1]
    assert [h["pairs"] for h in hist] == [1, 0, 0, 1, 0, 2, 0, 0, 0, 1]
    assert stats["agreement"]["quantiles"]["median"] == pytest.approx(0.75)
    assert stats["images"]["intransitive_triads"] == 1  # A>B (p1), B>C (p2), C>A (p3)
    run = stats["provenance"]["runs"]
    assert len(run) == 1 and run[0]["model"] == "tiny/model" and run[0]["votes"] == 24
    assert (run[0]["seed_min"], run[0]["seed_max"]) == (100, 103)

    images = pq.read_table(out / "images.parquet")
    assert tuple(images.column_names) == IMAGE_COLUMNS
    got = {r["image_id"]: (r["wins"], r["losses"], r["ties"], r["comparisons"], r["win_rate"])
           for r in images.to_pylist()}
    assert got == {"A": (1, 1, 0, 2, 0.5), "B": (1, 1, 1, 3, 0.5), "C": (1, 1, 0, 2, 0.5),
                   "D": (1, 0, 1, 2, 0.75), "E": (0, 1, 0, 1, 0.0)}
    bt = {r["image_id"]: r["bt_score"] for r in images.to_pylist()}
    # decisive outcomes: A>B, B>C, C>A, D>E. The cycle is symmetric: A, B, C equal.
    assert bt["A"] == pytest.approx(bt["B"], abs=1e-6) == pytest.approx(bt["C"], abs=1e-6)
    assert bt["D"] > bt["A"] > bt["E"] and bt["D"] == pytest.approx(-bt["E"], abs=1e-6)
    assert sum(bt.values()) == pytest.approx(0, abs=1e-6)

    for png in ("agreement_hist.png", "position_bias.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "stats.md").read_text()
    assert "57.89%" in md and "intransitive triads (A>B, B>C, C>A): 1" in md
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "aggregate" and man["label"] == "hard"
    assert man["votes"]["model"] == "tiny/model" and man["votes"]["votes_per_pair"] == 4
    assert "count_pair_votes.sql" in man["sql"] and len(man["sql"]["count_pair_votes.sql"]) == 64
    assert not (out / ".duckdb_tmp").exists()


def test_filters_write_filtered_out_with_reasons(votes_dir, tmp_path):
    out = tmp_path / "prefs"
    summary = run_cli(votes_dir, out, "--min-agreement", "0.7", "--min-valid-votes", "4")
    kept = [r["pair_id"] for r in pq.read_table(out / "preferences.parquet").to_pylist()]
    assert kept == ["p1", "p3", "p6"]
    removed = pq.read_table(out / "filtered_out.parquet")
    assert removed.column_names == [*PREFERENCE_COLUMNS, "reason"]
    assert {r["pair_id"]: r["reason"] for r in removed.to_pylist()} == {
        "p2": "min_valid_votes,min_agreement", "p4": "min_valid_votes,min_agreement",
        "p5": "min_agreement"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["filters"]["removed"] == [
        {"reason": "min_agreement", "pairs": 1, "votes": 4},
        {"reason": "min_valid_votes,min_agreement", "pairs": 2, "votes": 8}]
    assert (stats["pairs"]["kept"], stats["pairs"]["filtered_out"]) == (3, 3)
    assert summary["pairs_kept"] == 3
    # the per-image table covers the kept pairs only: A>B? no (p1 kept: A>B), C>A, E<D
    images = {r["image_id"]: (r["wins"], r["losses"]) for r in
              pq.read_table(out / "images.parquet").to_pylist()}
    assert images == {"A": (1, 1), "B": (0, 1), "C": (1, 0), "D": (1, 0), "E": (0, 1)}
    assert stats["images"]["intransitive_triads"] == 0
    # a rerun without filters removes the stale filtered_out.parquet
    run_cli(votes_dir, out)
    assert not (out / "filtered_out.parquet").exists()


def test_bradley_terry_matches_choix():
    choix = pytest.importorskip("choix")
    rng = np.random.default_rng(0)
    n = 12
    strength = rng.normal(size=n)
    pairs = rng.integers(0, n, size=(80, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    first_wins = rng.random(len(pairs)) < 1 / (1 + np.exp(-(strength[pairs[:, 0]]
                                                              - strength[pairs[:, 1]])))
    winners = np.where(first_wins, pairs[:, 0], pairs[:, 1])
    losers = np.where(first_wins, pairs[:, 1], pairs[:, 0])
    ours, info = fit_bradley_terry(winners, losers, n + 1, alpha=0.1)  # item n: no comparison
    ref = choix.opt_pairwise(n, list(zip(winners.tolist(), losers.tolist(), strict=True)),
                             alpha=0.1, method="Newton-CG")
    assert info["converged"] and info["comparisons"] == len(winners)
    assert np.isnan(ours[n])
    np.testing.assert_allclose(ours[:n], ref - ref.mean(), atol=1e-5)


# --- bad input: one clear line, exit code 1 -------------------------------------------------

def test_missing_and_empty_votes_folder(tmp_path):
    assert_error(invoke(["aggregate", "--votes", str(tmp_path / "nope"), "--out",
                         str(tmp_path / "o")]), "votes folder not found", "nope")
    (tmp_path / "empty").mkdir()
    assert_error(invoke(["aggregate", "--votes", str(tmp_path / "empty"), "--out",
                         str(tmp_path / "o")]), "no vote shards")


def test_truncated_shard_is_named(votes_dir, tmp_path):
    shard = sorted(votes_dir.glob("votes-*.parquet"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", str(tmp_path / "o")]),
                 str(shard), "not a readable Parquet file")


def test_wrong_schema_shard_is_named(votes_dir, tmp_path):
    bad = votes_dir / "votes-00000-of-00001-bad.parquet"
    pq.write_table(pa.table({"pair_id": ["x"], "answer": ["0"]}), bad)
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", str(tmp_path / "o")]),
                 str(bad), "lacks column(s)", "vote_index")
    rows = vote_rows(PAIRS[:1])
    table = pa.Table.from_pylist(rows, schema=VOTES_SCHEMA)
    table = table.set_column(table.schema.get_field_index("answer"), "answer",
                             pa.array([str(r["answer"]) for r in rows]))
    pq.write_table(table, bad)
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", str(tmp_path / "o")]),
                 str(bad), "column answer of type string")


def test_mixed_provenance_refused_unless_allowed(tmp_path):
    rows = vote_rows(PAIRS[:3]) + vote_rows(PAIRS[3:], {"model": "other/model"})
    votes = write_votes(tmp_path / "votes", [rows])
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "2 different runs", "other/model", "--allow-mixed")
    run_cli(votes, tmp_path / "o", "--allow-mixed")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["provenance"]["mixed"] is True
    assert sorted(r["model"] for r in stats["provenance"]["runs"]) == ["other/model",
                                                                       "tiny/model"]
    # one model per shard: each footer holds one value, but not the same one
    votes = write_votes(tmp_path / "votes3", [vote_rows(PAIRS[:3]),
                                              vote_rows(PAIRS[3:], {"model": "other/model"})])
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o3")]),
                 "2 different runs", "other/model")
    # sampling settings count as provenance too
    rows = vote_rows(PAIRS[:3]) + vote_rows(PAIRS[3:], {"temperature": 0.7})
    votes = write_votes(tmp_path / "votes2", [rows])
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o2")]),
                 "temperature=0.7")


def test_votes_disagreeing_with_manifest_refused(tmp_path):
    votes = write_votes(tmp_path / "votes", [vote_rows(PAIRS)], {"prompt_sha256": "cd" * 32})
    shard = sorted(votes.glob("votes-*.parquet"))[0]
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 f"vote shard {shard} was made with other settings than",
                 "prompt_sha256 'abab", "(manifest: 'cdcd", "--allow-mixed")


def test_duplicated_shard_refused(votes_dir, tmp_path):
    shard = sorted(votes_dir.glob("votes-*.parquet"))[0]
    copy = votes_dir / "votes-00000-of-00001-copy.parquet"
    shutil.copy(shard, copy)
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", str(tmp_path / "o")]),
                 f"pair p1 in vote shard {shard} (4 of 4 votes, vote_index 0..3), vote shard "
                 f"{copy} (4 of 4 votes", "a vote_index appears more than once",
                 "3 pair(s) of")


def test_missing_manifest_and_bad_options(votes_dir, tmp_path):
    out = str(tmp_path / "o")
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", out,
                         "--label", "fuzzy"]), "unknown --label 'fuzzy'")
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", out,
                         "--min-agreement", "0.3"]), "--min-agreement must be in [0.5, 1]")
    (votes_dir / "manifest.json").unlink()
    assert_error(invoke(["aggregate", "--votes", str(votes_dir), "--out", out]),
                 "no manifest.json")


def test_console_script_prints_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from evoq_data.cli import main; main()",
                           "aggregate", "--votes", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: votes folder not found: {tmp_path / 'nope'}"]
