"""Column sets of every Parquet file evoq writes, named once and checked on read.

Each stage names its input columns here and calls :func:`check_columns` when it starts, so a
wrong file fails with one clear line instead of a KeyError deep inside.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError

SCHEMA_VERSION = "2"  # 2: votes gained votes_planned, stop_reason, prob_0, prob_1

# Vote columns added in schema 2; shards written before them lack them (read as a fixed-K
# sampled run: votes_planned = the manifest's K, stop_reason 'fixed', no probabilities).
VOTES_COLUMNS_ADDED_IN_2 = ("votes_planned", "stop_reason", "prob_0", "prob_1")

PAIRS_COLUMNS = ("pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path")

PAIRS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("image_a_id", pa.string()),
        ("image_a_path", pa.string()),
        ("image_b_id", pa.string()),
        ("image_b_path", pa.string()),
        # Synthetic pairs only (null otherwise): the shared reference and the known order.
        ("reference_id", pa.string()),
        ("known_better_id", pa.string()),
    ]
)

# What made a vote or a score (the same columns, in this order, in both files) and when.
_GENERATION_FIELDS = [
    ("model", pa.string()),
    ("model_revision", pa.string()),
    ("engine", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_sha256", pa.string()),
    ("temperature", pa.float64()),
    ("top_p", pa.float64()),
    ("max_tokens", pa.int32()),
    ("seed", pa.int64()),
]
_WRITTEN_FIELDS = [("created_at", pa.timestamp("us", tz="UTC")), ("evoq_version", pa.string())]

VOTES_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("vote_index", pa.int32()),
        ("image_a_id", pa.string()),
        ("image_b_id", pa.string()),
        ("image_a_path", pa.string()),
        ("image_b_path", pa.string()),
        ("swapped", pa.bool_()),
        ("raw_text", pa.string()),
        ("answer", pa.int8()),
        ("winner_id", pa.string()),
        ("parse_status", pa.string()),
        *_GENERATION_FIELDS,
        # How the pair's votes were asked for (the same on every vote row of a pair):
        # votes_planned = K, the votes the pair could have had; stop_reason = 'fixed' (all K
        # asked), 'decided' (the Eq. 1 majority could no longer change), 'confident' (a
        # posterior bound passed the confidence) or 'exhausted' (an adaptive run used all K).
        ("votes_planned", pa.int32()),
        ("stop_reason", pa.string()),
        # --mode logprob only (null otherwise): P("0") and P("1") of the first answer token,
        # renormalised over the two (prob_0 + prob_1 = 1).
        ("prob_0", pa.float64()),
        ("prob_1", pa.float64()),
        *_WRITTEN_FIELDS,
    ]
)
VOTES_COLUMNS = tuple(VOTES_SCHEMA.names)

SCORES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("image_path", pa.string()),
        ("sample_index", pa.int32()),
        ("raw_text", pa.string()),
        ("score", pa.float64()),
        ("parse_status", pa.string()),
        *_GENERATION_FIELDS,
        *_WRITTEN_FIELDS,
    ]
)


def check_columns(path: str | Path, required: Iterable[str], what: str) -> pa.Schema:
    """Read a Parquet file's schema and fail with one line if columns are missing."""
    path = Path(path)
    if not path.exists():
        raise EvoqError(f"{what} file not found: {path}")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error here
        raise EvoqError(f"{what} file {path} is not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise EvoqError(
            f"{what} file {path} lacks column(s) {', '.join(missing)}; "
            f"expected at least {', '.join(required)}"
        )
    return schema


