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
with itself is refused with the file and row named. So is input that would be kept wrong: a
column evoq reads holding lists or structs (an embedded image), binary data in a nested
column, text that is not UTF-8, and rows identical to an earlier row (unless ``--duplicates
keep`` or ``drop``); an input column named ``row`` is kept as ``input_row``. Values shown in
a message are cut to 80 characters. A pair's id is
:func:`evoq_data.pairs.sample.make_pair_id`, so rows naming the pair in either order are
votes on one pair (oriented as first seen). Ties are kept as invalid votes
(``parse_status`` ``tie``): they count in ``invalid_votes``, never as a vote for either image.

The folder gets ``pairs.parquet`` (+ its manifest), one vote shard and ``manifest.json``
(stage ``vote``, engine ``import``, model = ``--source``), written last.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256, image_id
from evoq_data.core.io import write_parquet_atomic
from evoq_data.core.manifests import new_manifest, write_manifest
from evoq_data.core.schemas import PAIRS_SCHEMA, VOTES_SCHEMA

log = logging.getLogger(__name__)

ENGINE = "import"
WINNERS = {"a": "a", "b": "b", "0": "a", "1": "b", "tie": None, "draw": None}
SHOWN = {"a": False, "b": True, "true": True, "false": False, "1": True, "0": False}
SHOWN_ROWS = 5
SHOWN_CHARS = 80  # the most characters of an input value a message shows
DUPLICATES = ("refuse", "keep", "drop")
ROW_KEY = "row"  # raw_text's key for the input row number
RENAMED_ROW_KEY = "input_row"  # where an input column named `row` goes in raw_text
# columns evoq reads (by lower-case name), each one plain value a row
ROLES = ("image_a", "image_b", "winner", "shown_first", "swapped", "rater", "judge")


def _show(value, limit: int = SHOWN_CHARS) -> str:
    """repr(value) cut to ``limit`` characters (a cell can hold an image's bytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _show_path(path: str, limit: int = SHOWN_CHARS) -> str:
    """A path, its end kept when it is longer than ``limit`` characters."""
    return path if len(path) <= limit else f"...{path[-limit:]}"


def _has_binary(t: pa.DataType) -> bool:
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    return any(_has_binary(t.field(i).type) for i in range(t.num_fields))


def _checked_columns(table: pa.Table, path: Path) -> tuple[pa.Table, list[str]]:
    """Every column as evoq can keep it, or one line naming the column (and row): binary
    text decoded as UTF-8 (refused, with the row, when it is not UTF-8); a column evoq reads
    must hold one plain value a row; no column may hold binary data in a nested value.
    Returns the table and the names of the columns decoded."""
    lower = [c.lower() for c in table.column_names]
    twice = sorted({c for c in lower if lower.count(c) > 1})
    if twice:
        raise EvoqError(f"votes file {path} has column(s) {', '.join(twice)} more than once "
                        "(names are matched case-insensitively)")
    decoded = []
    for i, name in enumerate(table.column_names):
        col, t = table.column(i), table.schema.field(i).type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            try:
                table = table.set_column(i, name, pc.cast(col, pa.string()))
            except pa.ArrowInvalid:
                n, value = next((n, v) for n, v in enumerate(col.to_pylist(), start=1)
                                if v is not None and not _is_utf8(v))
                raise EvoqError(f"votes file {path} row {n}, column {name}: not UTF-8 text "
                                f"({_show(value)}); save the file as UTF-8") from None
            decoded.append(name)
        elif pa.types.is_nested(t) or pa.types.is_fixed_size_binary(t):
            kind = str(t) if len(str(t)) <= SHOWN_CHARS else str(t)[:SHOWN_CHARS] + "..."
            if name.lower() in ROLES:
                raise EvoqError(f"votes file {path} column {name} holds {kind} values; it must "
                                "hold one plain value a row (image_a / image_b: a file path)")
            if _has_binary(t):
                raise EvoqError(f"votes file {path} column {name} holds binary data ({kind}: "
                                "embedded images?); drop the column or make it text")
    return table, decoded


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _duplicates(rows: list[dict]) -> list[tuple[int, int]]:
    """(row, first row it repeats) for every input row identical to an earlier one."""
    first: dict[str, int] = {}
    out = []
    for n, row in enumerate(rows, start=1):
        key = json.dumps(row, sort_keys=True, default=repr)
        if key in first:
            out.append((n, first[key]))
        else:
            first[key] = n
    return out


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
        raise EvoqError(f"cannot read votes file {path}: {_show(str(exc), 200)}") from exc
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
               images_root: str | Path | None = None, duplicates: str = "refuse") -> dict:
    """Write ``out`` (a new VOTES_DIR) from the comparisons in ``input_file``.
    ``duplicates``: what to do with input rows identical to an earlier row (every column
    equal): 'refuse' (the default), 'keep' (each is a vote) or 'drop' (the first is kept)."""
    from evoq_data.images.pool import check_image_bytes
    from evoq_data.pairs.sample import make_pair_id
    from evoq_data.votes.store import write_shard

    path = Path(input_file)
    out = Path(out)
    if not source or not source.strip() or "\n" in source:
        raise EvoqError("--source must name where the votes come from, e.g. 'koniq-raters'")
    if duplicates not in DUPLICATES:
        raise EvoqError(f"--duplicates must be one of {', '.join(DUPLICATES)}, got "
                        f"{duplicates!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvoqError(f"--out {out} exists and is not an empty folder; import into a new "
                        "VOTES_DIR")
    table, decoded = _checked_columns(_read(path), path)
    renamed = {}
    if ROW_KEY in table.column_names:  # raw_text's row number keeps its name
        if RENAMED_ROW_KEY in table.column_names:
            raise EvoqError(f"votes file {path} has columns {ROW_KEY} and {RENAMED_ROW_KEY}; "
                            f"evoq keeps the row number as {ROW_KEY} in raw_text and an input "
                            f"column {ROW_KEY} as {RENAMED_ROW_KEY}: rename one")
        renamed[ROW_KEY] = RENAMED_ROW_KEY
        table = table.rename_columns([renamed.get(c, c) for c in table.column_names])
        log.warning("votes file %s: its column %r is kept in raw_text as %r (evoq's own %r "
                    "is the row number)", path, ROW_KEY, RENAMED_ROW_KEY, ROW_KEY)
    by_lower = {c.lower(): c for c in table.column_names}
    missing = [c for c in ("image_a", "image_b", "winner") if c not in by_lower]
    if missing:
        raise EvoqError(f"votes file {path} lacks column(s) {', '.join(missing)}; needs "
                        f"image_a, image_b, winner (columns: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise EvoqError(f"votes file {path} has no rows")
    rows = table.to_pylist()
    repeats = _duplicates(rows)
    if repeats and duplicates == "refuse":
        raise EvoqError(
            f"votes file {path} has {len(repeats)} row(s) identical to an earlier row ("
            + ", ".join(f"row {n} repeats row {m}" for n, m in repeats[:SHOWN_ROWS])
            + (" and more" if len(repeats) > SHOWN_ROWS else "") + "); pass --duplicates keep "
            "to count each as a vote (e.g. raters not named in a column) or --duplicates drop "
            "to keep only the first")
    if repeats:
        log.warning("votes file %s: %d row(s) identical to an earlier row %s (--duplicates %s)",
                    path, len(repeats), "counted as votes" if duplicates == "keep"
                    else "left out", duplicates)
    dropped = {n for n, _ in repeats} if duplicates == "drop" else set()
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
                absent.append(_show_path(str(p)))
                files[str(named)] = ("", "")
                continue
            try:
                check_image_bytes(data)
            except ValueError as exc:
                bad.append(f"{_show_path(str(p))} ({_show(str(exc), 120)})")
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
        if n in dropped:
            continue
        a_named, b_named = row[by_lower["image_a"]], row[by_lower["image_b"]]
        if a_named is None or b_named is None:
            problems.append(f"row {n}: an empty image_a or image_b")
            continue
        (a_path, a_id), (b_path, b_id) = files[str(a_named)], files[str(b_named)]
        if a_id == b_id:
            problems.append(f"row {n}: image_a and image_b are the same image "
                            f"({_show_path(str(a_named))})")
            continue
        raw_winner = _text(row[by_lower["winner"]])
        if raw_winner not in WINNERS:
            problems.append(f"row {n}: winner {_show(row[by_lower['winner']])} is not a, b, "
                            "tie, 0 or 1")
            continue
        side = WINNERS[raw_winner]
        swapped_row = None
        if shown_col is not None:
            raw_shown = _text(row[shown_col])
            if raw_shown not in SHOWN:
                problems.append(f"row {n}: {shown_col} {_show(row[shown_col])} is not a/b "
                                "or true/false")
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
                          {**kept, ROW_KEY: n}, default=str, sort_keys=True)})
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
    raters = len({r[raters_col] for n, r in enumerate(rows, start=1) if n not in dropped}) \
        if raters_col else None
    order = "as recorded" if shown_col else "unknown"
    manifest = new_manifest(
        "vote", model=source, model_revision=revision, engine=ENGINE, prompt_id=ENGINE,
        prompt_sha256=None, prompt_template=None, temperature=None, top_p=None,
        max_tokens=None, seed=None, votes_per_pair=k,
        votes_per_pair_range=[min(counts.values()), max(counts.values())], order=order,
        reasoning=None, num_shards=1, pairs_file=str(pairs_file.resolve()),
        pairs_sha256=file_sha256(pairs_file), source=source, imported_from=str(path),
        input_sha256=revision.removeprefix("sha256:"), input_rows=len(rows), raters=raters,
        ties=sum(v["answer"] is None for v in votes), duplicate_rows=len(repeats),
        duplicates=duplicates, renamed_columns=renamed, decoded_columns=decoded)
    write_manifest(out, manifest)
    return {"votes_dir": str(out), "pairs_file": str(pairs_file), "pairs": len(pairs),
            "votes": votes_table.num_rows, "ties": manifest["ties"], "order": order,
            "votes_per_pair": k, "source": source}
