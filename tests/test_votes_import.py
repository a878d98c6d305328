"""`evoq-data votes import`: comparisons made elsewhere -> VOTES_DIR -> aggregate -> push ->
eval --prefs, with exact expected labels; and bad rows named."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from fixtures.votes import read_votes
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.pairs.sample import make_pair_id

runner = CliRunner()

# image_a, image_b, winner, shown_first, rater (indices into the 4 images)
ROWS = [(0, 1, "a", "a", "r1"), (0, 1, "a", "b", "r2"), (1, 0, "b", "a", "r1"),
        (0, 1, "b", "b", "r3"), (1, 2, "0", "a", "r1"), (2, 1, "1", "b", "r2"),
        (1, 2, "tie", "a", "r3"), (2, 3, "b", "a", "r1"), (3, 2, "b", "b", "r2"),
        (3, 0, "a", "a", "r1")]
# pair (as first seen) -> votes_a, votes_b, invalid (ties), p_star (hard)
EXPECTED = {(0, 1): (3, 1, 0, 1.0), (1, 2): (2, 0, 1, 1.0), (2, 3): (1, 1, 0, 0.5),
            (3, 0): (1, 0, 0, 1.0)}
MOS = [4.0, 3.0, 2.0, 1.0]


@pytest.fixture
def comparisons(tmp_path):
    paths = make_images(tmp_path / "pool", 4, seed=9)
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    lines = ["image_a,image_b,winner,shown_first,rater"]
    lines += [f"{rel[a]},{rel[b]},{w},{s},{r}" for a, b, w, s, r in ROWS]
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    return tmp_path, paths, ids


def test_import_aggregate_push_eval(comparisons):
    tmp, paths, ids = comparisons
    votes = tmp / "votes"
    res = runner.invoke(app, ["votes", "import", "--input", str(tmp / "ratings.csv"),
                              "--source", "lab-raters", "--out", str(votes)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["pairs"], summary["votes"], summary["ties"]) == (4, 10, 1)
    assert summary["order"] == "as recorded" and summary["votes_per_pair"] is None
    manifest = json.loads((votes / "manifest.json").read_text())
    assert (manifest["stage"], manifest["engine"], manifest["model"]) == \
        ("vote", "import", "lab-raters")
    assert manifest["schema_version"] and manifest["raters"] == 3
    assert manifest["votes_per_pair_range"] == [1, 4]
    pairs = pq.read_table(votes / "pairs.parquet").to_pylist()
    assert {(p["image_a_id"], p["image_b_id"]) for p in pairs} == \
        {(ids[a], ids[b]) for a, b in EXPECTED}
    rows = read_votes(votes)
    assert len(rows) == 10 and {r["model"] for r in rows} == {"lab-raters"}
    # every vote counts back to the image the row named as winner
    for r in rows:
        raw = json.loads(r["raw_text"])
        a, b, w, s, rater = ROWS[raw["row"] - 1]
        assert raw["rater"] == rater and raw["shown_first"] == s
        want = None if w == "tie" else ids[a] if w in ("a", "0") else ids[b]
        assert r["winner_id"] == want
        first = ids[a] if s == "a" else ids[b]
        assert r["swapped"] == (first == r["image_b_id"])
        if want is not None:
            shown = (r["image_b_id"], r["image_a_id"]) if r["swapped"] else \
                (r["image_a_id"], r["image_b_id"])
            assert shown[r["answer"]] == want and r["parse_status"] == "ok"
        else:
            assert r["answer"] is None and r["parse_status"] == "tie"

    prefs = tmp / "prefs"
    res = runner.invoke(app, ["aggregate", "--votes", str(votes), "--out", str(prefs), "-q"])
    assert res.exit_code == 0, res.output
    got = {(r["image_a_id"], r["image_b_id"]): (r["votes_a"], r["votes_b"], r["invalid_votes"],
                                                r["p_star"])
           for r in pq.read_table(prefs / "preferences.parquet").to_pylist()}
    assert got == {(ids[a], ids[b]): v for (a, b), v in EXPECTED.items()}
    assert {r["pair_id"] for r in pq.read_table(prefs / "preferences.parquet").to_pylist()} == \
        {make_pair_id(ids[a], ids[b]) for a, b in EXPECTED}

    out = tmp / "dataset"
    res = runner.invoke(app, ["push", "--prefs", str(prefs), "--repo-id", "me/imported",
                              "--version", "v1", "--local-dir", str(out), "--include-votes",
                              "-q"])
    assert res.exit_code == 0, res.output
    card = (out / "README.md").read_text()
    assert "labelled by votes imported from `lab-raters`" in card
    published = pq.read_table(next((out / "preferences").glob("*.parquet"))).to_pylist()
    assert sorted(r["p_star"] for r in published) == sorted(v[3] for v in EXPECTED.values())

    pq.write_table(pa.table({"image_id": ids, "mos": MOS}), tmp / "mos.parquet")
    res = runner.invoke(app, ["eval", "--prefs", str(prefs), "--labels",
                              str(tmp / "mos.parquet"), "--out", str(tmp / "eval")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp / "eval" / "accuracy.json").read_text())
    # (0,1) a=0 right; (1,2) a=1 right; (2,3) undecided; (3,0) a=3 but 0 is better: wrong
    assert {k: doc[k] for k in ("pairs", "with_truth", "decisive", "correct", "undecided")} \
        == {"pairs": 4, "with_truth": 4, "decisive": 3, "correct": 2, "undecided": 1}
    assert doc["accuracy"] == pytest.approx(2 / 3)


def test_without_shown_order_image_a_is_recorded_first(comparisons):
    tmp, paths, ids = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    (tmp / "plain.csv").write_text("image_a,image_b,winner\n"
                                   f"{rel[0]},{rel[1]},b\n{rel[1]},{rel[0]},b\n")
    res = runner.invoke(app, ["votes", "import", "--input", str(tmp / "plain.csv"),
                              "--source", "judge-x", "--out", str(tmp / "v")])
    assert res.exit_code == 0, res.output
    rows = read_votes(tmp / "v")
    assert [(r["swapped"], r["answer"], r["winner_id"]) for r in rows] == \
        [(False, 1, ids[1]), (False, 0, ids[0])]
    assert json.loads((tmp / "v" / "manifest.json").read_text())["order"] == "unknown"
    assert json.loads(res.stdout)["votes_per_pair"] == 2


def test_bad_rows_are_named(comparisons):
    tmp, paths, ids = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]

    def run(text, *extra, out="bad"):
        (tmp / "in.csv").write_text(text)
        return runner.invoke(app, ["votes", "import", "--input", str(tmp / "in.csv"),
                                   "--source", "s", "--out", str(tmp / out), *extra])

    assert_user_error(run(f"image_a,image_b,winner\n{rel[0]},{rel[1]},a\n{rel[0]},{rel[1]},left\n"),
                      "row 2: winner 'left' is not a, b, tie")
    assert_user_error(run(f"image_a,image_b,winner\n{rel[0]},{rel[0]},a\n"),
                      "row 1: image_a and image_b are the same image")
    assert_user_error(run(f"image_a,image_b,winner\n{rel[0]},pool/gone.png,a\n"),
                      "1 image(s) named in", "gone.png", "--images-root")
    assert_user_error(run(f"image_a,image_b\n{rel[0]},{rel[1]}\n"), "lacks column(s) winner")
    assert_user_error(run(f"image_a,image_b,winner,shown_first\n{rel[0]},{rel[1]},a,c\n"),
                      "row 1: shown_first 'c'")
    assert not (tmp / "bad").exists()
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("x")
    assert_user_error(run(f"image_a,image_b,winner\n{rel[0]},{rel[1]},a\n", out="full"),
                      "not an empty folder")


# --- input that would be imported wrong: one line each ------------------------------------------

def _import(tmp, name, *extra):
    return runner.invoke(app, ["votes", "import", "--input", str(tmp / name), "--source", "s",
                               "--out", str(tmp / f"v-{name.split('.')[0]}"), *extra])


def test_a_list_valued_rater_is_one_line(comparisons):
    tmp, paths, _ = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    pq.write_table(pa.table({"image_a": [rel[0]], "image_b": [rel[1]], "winner": ["a"],
                             "rater": [["r1", "r2"]]}), tmp / "listed.parquet")
    assert_user_error(_import(tmp, "listed.parquet"), "column rater holds list<",
                      "one plain value a row")


def test_embedded_images_are_refused_without_their_bytes(comparisons):
    tmp, paths, _ = comparisons
    big = [{"bytes": p.read_bytes() * 400, "path": p.name} for p in paths[:2]]
    assert all(len(b["bytes"]) > 40_000 for b in big)
    pq.write_table(pa.table({"image_a": [big[0]], "image_b": [big[1]], "winner": ["a"]}),
                   tmp / "structs.parquet")
    message = assert_user_error(_import(tmp, "structs.parquet"), "column image_a holds struct<",
                                "a file path")
    assert len(message) < 400
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    pq.write_table(pa.table({"image_a": [rel[0]], "image_b": [rel[1]], "winner": ["a"],
                             "picture": [big[0]]}), tmp / "extra.parquet")
    message = assert_user_error(_import(tmp, "extra.parquet"), "column picture holds binary data")
    assert len(message) < 400


def test_non_utf8_text_is_refused_naming_the_row(comparisons):
    tmp, paths, _ = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    (tmp / "latin1.csv").write_bytes(
        f"image_a,image_b,winner,rater\n{rel[0]},{rel[1]},a,Ann\n{rel[1]},{rel[2]},b,"
        .encode() + "José\n".encode("latin-1"))
    assert_user_error(_import(tmp, "latin1.csv"),
                      "row 2, column rater: not UTF-8 text (b'Jos\\xe9')", "save the file as UTF-8")
    # binary text that is UTF-8 is decoded, and the manifest says so
    pq.write_table(pa.table({"image_a": [rel[0]], "image_b": [rel[1]], "winner": ["a"],
                             "note": pa.array(["ok é".encode()], pa.binary())}),
                   tmp / "bin.parquet")
    assert _import(tmp, "bin.parquet").exit_code == 0
    assert json.loads(read_votes(tmp / "v-bin")[0]["raw_text"])["note"] == "ok é"
    manifest = json.loads((tmp / "v-bin" / "manifest.json").read_text())
    assert manifest["decoded_columns"] == ["note"]


def test_an_input_column_named_row_is_kept_as_input_row(comparisons):
    tmp, paths, _ = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    (tmp / "rows.csv").write_text(f"row,image_a,image_b,winner\n17,{rel[0]},{rel[1]},a\n"
                                  f"42,{rel[1]},{rel[2]},b\n")
    res = _import(tmp, "rows.csv")
    assert res.exit_code == 0, res.output
    raw = sorted((json.loads(r["raw_text"]) for r in read_votes(tmp / "v-rows")),
                 key=lambda r: r["row"])
    assert [(r["row"], r["input_row"]) for r in raw] == [(1, 17), (2, 42)]
    manifest = json.loads((tmp / "v-rows" / "manifest.json").read_text())
    assert manifest["renamed_columns"] == {"row": "input_row"}


def test_duplicated_rows_are_refused_kept_or_dropped_and_counted(comparisons):
    tmp, paths, ids = comparisons
    rel = [p.relative_to(tmp).as_posix() for p in paths]
    lines = ["image_a,image_b,winner", f"{rel[0]},{rel[1]},a", f"{rel[1]},{rel[2]},b",
             f"{rel[0]},{rel[1]},a", f"{rel[0]},{rel[1]},a", f"{rel[0]},{rel[1]},b"]
    (tmp / "dup.csv").write_text("\n".join(lines) + "\n")
    assert_user_error(_import(tmp, "dup.csv"), "has 2 row(s) identical to an earlier row",
                      "row 3 repeats row 1, row 4 repeats row 1", "--duplicates keep")
    assert not (tmp / "v-dup").exists()
    for policy, votes in (("keep", 5), ("drop", 3)):
        out = tmp / f"v-{policy}"
        res = runner.invoke(app, ["votes", "import", "--input", str(tmp / "dup.csv"),
                                  "--source", "s", "--out", str(out), "--duplicates", policy])
        assert res.exit_code == 0, res.output
        rows = read_votes(out)
        assert len(rows) == votes
        assert sorted(json.loads(r["raw_text"])["row"] for r in rows) == \
            ([1, 2, 3, 4, 5] if policy == "keep" else [1, 2, 5])
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["duplicate_rows"], manifest["duplicates"], manifest["input_rows"]) == \
            (2, policy, 5)
