"""A small PREFS_DIR written exactly per the aggregate contract (for push tests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import make_images
from PIL import Image

from evoq_data.core.schemas import VOTES_SCHEMA
from evoq_data.generation.prompts import compare_prompt

PREFS_SCHEMA = pa.schema(
    [("pair_id", pa.string()), ("image_a_id", pa.string()), ("image_a_path", pa.string()),
     ("image_b_id", pa.string()), ("image_b_path", pa.string())]
    + [(c, pa.int64()) for c in ("votes_a", "votes_b", "invalid_votes", "total_votes")]
    + [(c, pa.float64()) for c in ("p_star", "vote_fraction_a", "agreement", "wilson_low",
                                   "wilson_high")]
    + [("votes_first_shown", pa.int64())]
)

# (image a, image b, votes_a, votes_b, invalid) per pair
PAIRS = [(0, 1, 3, 1, 0), (1, 2, 0, 4, 0), (2, 3, 2, 2, 0), (0, 3, 1, 2, 1), (4, 0, 0, 0, 4)]


def make_prefs_dir(root: Path, *, n_images: int = 5, seed: int = 0, pairs=PAIRS,
                   model: str = "tiny-vlm", engine: str = "transformers") -> Path:
    """Images, preferences.parquet, images.parquet, stats, plots, manifest and a VOTES_DIR."""
    paths = make_images(root / "pool", n_images, seed=seed)
    ids = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    prefs = root / "prefs"
    prefs.mkdir(parents=True)
    rows = []
    for a, b, va, vb, inv in pairs:
        valid = va + vb
        frac = va / valid if valid else None
        rows.append({
            "pair_id": f"p{a}{b}", "image_a_id": ids[a], "image_a_path": str(paths[a]),
            "image_b_id": ids[b], "image_b_path": str(paths[b]), "votes_a": va, "votes_b": vb,
            "invalid_votes": inv, "total_votes": valid + inv,
            "p_star": None if not valid else 1.0 if va > vb else 0.0 if va < vb else 0.5,
            "vote_fraction_a": frac, "agreement": max(va, vb) / valid if valid else None,
            "wilson_low": frac / 2 if valid else None,
            "wilson_high": (1 + frac) / 2 if valid else None, "votes_first_shown": va,
        })
    pq.write_table(pa.Table.from_pylist(rows, schema=PREFS_SCHEMA), prefs / "preferences.parquet")
    used = sorted({i for a, b, *_ in pairs for i in (a, b)})
    images = [{"image_id": ids[i], "image_path": str(paths[i]), "wins": i, "losses": 1,
               "ties": 0, "comparisons": i + 1, "win_rate": i / (i + 1),
               "bt_score": 0.1 * i} for i in used]
    pq.write_table(pa.Table.from_pylist(images), prefs / "images.parquet")
    for name, colour in (("agreement_hist.png", (200, 30, 30)), ("position_bias.png", (30, 30, 200))):
        Image.new("RGB", (16, 12), colour).save(prefs / name)
    stats = {"label": "hard", "votes": {"total": 20, "invalid": 5}, "pairs": {"total": len(pairs)}}
    (prefs / "stats.json").write_text(json.dumps(stats))
    (prefs / "stats.md").write_text(
        "# Pseudo-preference statistics\n\n## Votes\n\n| | count |\n|---|---:|\n| votes | 20 |\n\n"
        "![agreement](agreement_hist.png)\n\n![position bias](position_bias.png)\n")
    votes_dir = root / "votes"
    votes_dir.mkdir()
    prompt = compare_prompt(True)
    vote_manifest = {
        "stage": "vote", "schema_version": "1", "evoq_version": "0.1.0", "model": model,
        "model_revision": "sha256:abc", "engine": engine, "prompt_id": prompt.prompt_id,
        "prompt_sha256": prompt.sha256, "prompt_template": prompt.template, "temperature": 1.0,
        "top_p": 1.0, "max_tokens": 64, "seed": 7, "votes_per_pair": 4, "order": "random",
        "reasoning": True, "num_shards": 1, "pairs_file": str(root / "pairs.parquet"),
        "pairs_sha256": "0" * 64, "created_at": "2026-11-26T00:00:00+00:00",
    }
    (votes_dir / "manifest.json").write_text(json.dumps(vote_manifest))
    (root / "pairs.manifest.json").write_text(json.dumps(
        {"source": str(root / "pool"), "seed": 3, "pool": {"images": n_images}}))
    vote_rows = []
    for a, b, va, vb, inv in pairs:
        answers = [0] * va + [1] * vb + [None] * inv
        for k, ans in enumerate(answers):
            vote_rows.append({
                "pair_id": f"p{a}{b}", "vote_index": k, "image_a_id": ids[a], "image_b_id": ids[b],
                "image_a_path": str(paths[a]), "image_b_path": str(paths[b]), "swapped": False,
                "raw_text": f"\\boxed{{{ans}}}" if ans is not None else "no idea",
                "answer": ans, "winner_id": None if ans is None else (ids[a], ids[b])[ans],
                "parse_status": "ok" if ans is not None else "no_box", "model": model,
                "model_revision": "sha256:abc", "engine": engine,
                "prompt_id": prompt.prompt_id, "prompt_sha256": prompt.sha256,
                "temperature": 1.0, "top_p": 1.0, "max_tokens": 64, "seed": 7 + k,
                "created_at": None, "evoq_version": "0.1.0"})
    pq.write_table(pa.Table.from_pylist(vote_rows, schema=VOTES_SCHEMA),
                   votes_dir / "votes-00000-of-00001-abc.parquet")
    manifest = {
        "stage": "aggregate", "evoq_version": "0.1.0", "created_at": "2026-11-26T00:00:00+00:00",
        "votes_dir": str(votes_dir), "votes": vote_manifest, "label": "hard",
        "filters": {"min_agreement": None, "min_valid_votes": None},
        "sql": {"count_pair_votes.sql": "1" * 64},
    }
    (prefs / "manifest.json").write_text(json.dumps(manifest))
    return prefs
