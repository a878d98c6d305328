"""``evoq-data votes import``: paired comparisons made elsewhere become a VOTES_DIR.

Votes from another judge or from human raters (a CSV or Parquet file, one comparison a row)
are written as evoq's own votes are, so ``aggregate``, ``push`` and ``eval --prefs`` work on
them. The minimal columns (names matched case-insensitively):

- ``image_a``, ``image_b``: the two image files (relative paths are relative to
  ``--images-root``, by default the input file's folder);
- ``winner``: ``a`` / ``b`` / ``tie``, or ``0`` (image_a) / ``1`` (image_b);

and, optionally:

- ``shown_first`` (``a`` / ``b``) or ``swapped`` (true when image_b was shown first): the
  order the rater saw; without it the order is unknown, recorded as image_a first
  (``swapped`` false) and said so in the manifest (``order: "unknown"``), so the position-bias
  statistics then measure a preference for image_a, not for a position;
- ``rater`` or ``judge``: who answered, kept (with every other column of the row) in
  ``raw_text`` as JSON, so nothing of the input is lost.

Every image is read, decoded and hashed (its id is the sha256 of its bytes, as everywhere in
evoq); a missing or undecodable file, an unknown winner value or a row comparing an image
with itself is refused with the file and row named. A pair's id is
:func:`evoq_data.pairs.sample.make_pair_id`, so rows naming the pair in either order are
votes on one pair (oriented as first seen). Ties are kept as invalid votes
(``parse_status`` ``tie``): they count in ``invalid_votes``, never as a vote for either image.

The folder gets ``pairs.parquet`` (+ its manifest), one vote shard and ``manifest.json``
(stage ``vote``, engine ``import``, model = ``--source``), written last.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256, image_id
from evoq_data.core.io import write_parquet_atomic
from evoq_data.core.manifests import new_manifest, write_manifest
from evoq_data.core.schemas import PAIRS_SCHEMA, VOTES_SCHEMA

ENGINE = "import"
WINNERS = {"a": "a", "b": "b", "0": "a", "1": "b", "tie": None, "draw": None}
SHOWN = {"a": False, "b": True, "true": True, "false": False, "1": True, "0": False}
SHOWN_ROWS = 5


def _read(path: Path) -> pa.Table:
    if not path.is_file():
        raise EvoqError(f"votes file not found: {path}")
    try:
        if path.suffix.lower() in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            from evoq_data.core.io import csv_delimiter

            return pacsv.read_csv(path, read_options=pacsv.ReadOptions(),
                                  parse_options=pacsv.ParseOptions(delimiter=csv_delimiter(path)),
                                  convert_options=pacsv.ConvertOptions(
                                      column_types={}, strings_can_be_null=True))
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvoqError(f"cannot read votes file {path}: {exc}") from exc
    raise EvoqError(f"votes file {path}: expected a .csv, .tsv or .parquet file")


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _named(items: list[str]) -> str:
    return ", ".join(items[:SHOWN_ROWS]) + (
        f" and {len(items) - SHOWN_ROWS} more" if len(items) > SHOWN_ROWS else "")


def run_import(input_file: str | Path, out: str | Path, *, source: str,
               images_root: str | Path | None = None) -> dict:
    """Write ``out`` (a new VOTES_DIR) from the comparisons in ``input_file``."""
    from evoq_data.images.pool import check_image_bytes
    from evoq_data.pairs.sample import make_pair_id
    from evoq_data.votes.store import write_shard

    path = Path(input_file)
    out = Path(out)
    if not source or not source.strip() or "\n" in source:
        raise EvoqError("--source must name where the votes come from, e.g. 'koniq-raters'")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvoqError(f"--out {out} exists and is not an empty folder; import into a new "
                        "VOTES_DIR")
    table = _read(path)
    by_lower = {c.lower(): c for c in table.column_names}
    missing = [c for c in ("image_a", "image_b", "winner") if c not in by_lower]
    if missing:
        raise EvoqError(f"votes file {path} lacks column(s) {', '.join(missing)}; needs "
                        f"image_a, image_b, winner (columns: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise EvoqError(f"votes file {path} has no rows")
    rows = table.to_pylist()
    root = Path(images_root) if images_root is not None else path.parent
    shown_col = by_lower.get("shown_first") or by_lower.get("swapped")

    # every image: read once, decoded, hashed
    files: dict[str, tuple[str, str]] = {}  # as written -> (absolute path, image id)
    absent, bad = [], []
    for row in rows:
        for side in ("image_a", "image_b"):
            named = row[by_lower[side]]
            if named is None or str(named) in files:
                continue
            p = Path(str(named)).expanduser()
            p = (p if p.is_absolute() else root / p).resolve()
            try:
                data = p.read_bytes()
            except OSError:
                absent.append(str(p))
                files[str(named)] = ("", "")
                continue
            try:
                check_image_bytes(data)
            except ValueError as exc:
                bad.append(f"{p} ({exc})")
            files[str(named)] = (str(p), image_id(data))
    if absent:
        raise EvoqError(f"{len(absent)} image(s) named in {path} are missing: {_named(absent)}"
                        f" (relative paths are taken from {root}; pass --images-root)")
    if bad:
        raise EvoqError(f"{len(bad)} image(s) named in {path} are not usable: {_named(bad)}")

    pairs: dict[str, dict] = {}
    votes: list[dict] = []
    problems = []
    for n, row in enumerate(rows, start=1):
        a_named, b_named = row[by_lower["image_a"]], row[by_lower["image_b"]]
        if a_named is None or b_named is None:
            problems.append(f"row {n}: an empty image_a or image_b")
            continue
        (a_path, a_id), (b_path, b_id) = files[str(a_named)], files[str(b_named)]
        if a_id == b_id:
            problems.append(f"row {n}: image_a and image_b are the same image ({a_named})")
            continue
        raw_winner = _text(row[by_lower["winner"]])
        if raw_winner not in WINNERS:
            problems.append(f"row {n}: winner {row[by_lower['winner']]!r} is not a, b, tie, "
                            "0 or 1")
            continue
        side = WINNERS[raw_winner]
        swapped_row = None
        if shown_col is not None:
            raw_shown = _text(row[shown_col])
            if raw_shown not in SHOWN:
                problems.append(f"row {n}: {shown_col} {row[shown_col]!r} is not a/b or "
                                "true/false")
                continue
            swapped_row = SHOWN[raw_shown]
        pair_id = make_pair_id(a_id, b_id)
        pair = pairs.setdefault(pair_id, {"pair_id": pair_id, "image_a_id": a_id,
                                          "image_a_path": a_path, "image_b_id": b_id,
                                          "image_b_path": b_path, "reference_id": None,
                                          "known_better_id": None})
        winner_id = None if side is None else (a_id if side == "a" else b_id)
        # shown order relative to the pair's orientation: first shown image's id
        first_id = a_id if not swapped_row else b_id
        # an unknown order is recorded as the pair's image a first
        swapped = bool(swapped_row is not None and first_id != pair["image_a_id"])
        shown = ((pair["image_b_id"], pair["image_a_id"]) if swapped
                 else (pair["image_a_id"], pair["image_b_id"]))
        answer = None if winner_id is None else shown.index(winner_id)
        kept = {k: v for k, v in row.items() if k not in (by_lower["image_a"],
                                                          by_lower["image_b"])}
        votes.append({"pair_id": pair_id, "row": n, "swapped": swapped, "answer": answer,
                      "winner_id": winner_id, "raw_text": json.dumps(
                          {"row": n, **kept}, default=str, sort_keys=True)})
    if problems:
        raise EvoqError(f"{len(problems)} row(s) of {path} cannot be imported: "
                        f"{'; '.join(problems[:SHOWN_ROWS])}"
                        f"{' and more' if len(problems) > SHOWN_ROWS else ''}")

    counts = Counter(v["pair_id"] for v in votes)
    next_index: Counter = Counter()
    revision = "sha256:" + file_sha256(path)
    created = datetime.now(UTC)
    cols = {name: [] for name in VOTES_SCHEMA.names}
    for v in votes:
        pair = pairs[v["pair_id"]]
        index = next_index[v["pair_id"]]
        next_index[v["pair_id"]] += 1
        values = {
            "pair_id": v["pair_id"], "vote_index": index,
            "image_a_id": pair["image_a_id"], "image_b_id": pair["image_b_id"],
            "image_a_path": pair["image_a_path"], "image_b_path": pair["image_b_path"],
            "swapped": v["swapped"], "raw_text": v["raw_text"], "answer": v["answer"],
            "winner_id": v["winner_id"], "parse_status": "ok" if v["answer"] is not None
            else "tie", "model": source, "model_revision": revision, "engine": ENGINE,
            "prompt_id": ENGINE, "prompt_sha256": None, "temperature": None, "top_p": None,
            "max_tokens": None, "seed": None, "created_at": created,
            "evoq_version": __version__,
            # columns of newer vote schemas, when this one has them
            "votes_planned": counts[v["pair_id"]], "stop_reason": "fixed",
            "prob_0": None, "prob_1": None,
        }
        for name in VOTES_SCHEMA.names:
            cols[name].append(values.get(name))
    votes_table = pa.table(cols, schema=VOTES_SCHEMA).sort_by([("pair_id", "ascending"),
                                                               ("vote_index", "ascending")])
    pairs_table = pa.Table.from_pylist(sorted(pairs.values(), key=lambda p: p["pair_id"]),
                                       schema=PAIRS_SCHEMA)

    out.mkdir(parents=True, exist_ok=True)
    pairs_file = out / "pairs.parquet"
    write_parquet_atomic(pairs_table, pairs_file)
    write_manifest(pairs_file, new_manifest(
        "pairs", num_pairs=pairs_table.num_rows, source=source, imported_from=str(path),
        images_root=str(root.resolve()), seed=None, pool={"images": len({i for p in pairs.values()
                                        for i in (p["image_a_id"], p["image_b_id"])})}))
    write_shard(votes_table, out, 0, 1)
    per_pair = set(counts.values())
    k = per_pair.pop() if len(per_pair) == 1 else None
    raters_col = by_lower.get("rater") or by_lower.get("judge")
    raters = len({r[raters_col] for r in rows}) if raters_col else None
    order = "as recorded" if shown_col else "unknown"
    manifest = new_manifest(
        "vote", model=source, model_revision=revision, engine=ENGINE, prompt_id=ENGINE,
        prompt_sha256=None, prompt_template=None, temperature=None, top_p=None,
        max_tokens=None, seed=None, votes_per_pair=k,
        votes_per_pair_range=[min(counts.values()), max(counts.values())], order=order,
        reasoning=None, num_shards=1, pairs_file=str(pairs_file.resolve()),
        pairs_sha256=file_sha256(pairs_file), source=source, imported_from=str(path),
        input_sha256=revision.removeprefix("sha256:"), input_rows=len(rows), raters=raters,
        ties=sum(v["answer"] is None for v in votes))
    write_manifest(out, manifest)
    return {"votes_dir": str(out), "pairs_file": str(pairs_file), "pairs": len(pairs),
            "votes": votes_table.num_rows, "ties": manifest["ties"], "order": order,
            "votes_per_pair": k, "source": source}
