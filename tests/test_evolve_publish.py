"""What a round with synthetic pairs publishes: no path component of the folders above the
run or the pool. Such a round mixes pool images and the run's distorted images, so no declared
root (the pool) holds every image and push publishes each ``*_path`` as the image's bare file
name, as evoq.json's ``paths`` says (the image is identified by the id beside it). The round's
steps run as evolve runs them, except the vote, which PIQE casts here (no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.images import make_images

from evoq_train.evolve.config import EvolveSettings


@pytest.mark.slow  # ~7 s of in-process evolve steps; test_publish_integrity.py::test_published_folder_holds_no_local_path checks the published-path rule fast
def test_synthetic_round_publishes_no_machine_path(tmp_path):
    from evoq_train.evolve.context import RunContext, Sources
    from evoq_train.evolve.layout import RunLayout
    from evoq_train.evolve.run import open_state, run_step
    from evoq_train.evolve.steps import build_steps

    pool = tmp_path / "data-disk" / "shared" / "pool"
    make_images(pool, 6)
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    run = (tmp_path / "home-of-user" / "runs" / "evo").resolve()
    run.mkdir(parents=True)
    s = EvolveSettings(pool=str(pool), model=str(model), rounds=2, run_dir=str(run),
                       train_config="cpu-smoke", pairs_per_round=6, votes_per_pair=2,
                       synthetic_pairs=10)
    s.validate()
    ctx = RunContext(s, Sources.resolve(s, run), RunLayout(run), open_state(s, run))
    steps = {step.name: step for step in build_steps(ctx)}
    before_vote = [n for n in steps if n.startswith("round-0/")] + [
        "round-2/pairs", "round-2/references", "round-2/distort", "round-2/synthetic-pairs",
        "round-2/mix-pairs"]
    for name in before_vote:
        run_step(ctx, steps[name], quiet=True)
    subprocess.run([sys.executable, "-m", "evoq_data.cli", "vote", "--pairs",
                    "round-2/pairs.parquet", "--out", "round-2/votes", "--votes-per-pair", "2",
                    "--engine", "piqe", "--quiet"], cwd=run, check=True,
                   stdout=subprocess.DEVNULL)
    for name in ("round-2/voted-by", "round-2/aggregate", "round-2/push"):
        run_step(ctx, steps[name], quiet=True)

    published = run / "datasets" / "round-2"
    meta = json.loads((published / "evoq.json").read_text())
    assert meta["paths"] == {"local": False, "file_names": True}
    # the published path of each image, computed apart: a file name it has in the round's
    # pairs (a reference copied beside its distortions has the pool image's id, so two names)
    rl = ctx.layout.round(2)
    names_of: dict[str, set[str]] = {}
    for p in pq.read_table(ctx.layout.path(rl.pairs)).to_pylist():
        for s in ("a", "b"):
            names_of.setdefault(p[f"image_{s}_id"], set()).add(Path(p[f"image_{s}_path"]).name)
    synthetic_ids = set(pq.read_table(ctx.layout.path(rl.synthetic_pairs))
                        .column("pair_id").to_pylist())
    private = {p.name for p in [*run.parents, *pool.parents] if p.name}
    published_pairs, checked = set(), 0
    for f in sorted(published.rglob("*.parquet")):
        table = pq.read_table(f)
        if "pair_id" in table.column_names:
            published_pairs |= set(table.column("pair_id").to_pylist())
        for row in table.drop_columns([c for c in table.column_names
                                       if c in ("image", "image_a", "image_b")]).to_pylist():
            for col, value in row.items():
                if col.endswith("_path"):
                    side = col.removesuffix("_path")
                    assert value in names_of[row[f"{side}_id"]], (f.name, col, value)
                    checked += 1
                if isinstance(value, str):
                    assert not (set(Path(value).parts) & private), (f.name, col, value)
                    assert str(tmp_path) not in value, (f.name, col, value)
        for key, value in (table.schema.metadata or {}).items():
            for name in (*private, str(tmp_path)):
                assert name.encode() not in key + value, (f.name, name)
    assert checked
    assert published_pairs & synthetic_ids, "the round's synthetic pairs were published"
    for f in published.rglob("*"):
        if f.is_file() and f.suffix != ".parquet":
            data = f.read_bytes()
            for name in ("data-disk", "home-of-user", tmp_path.name):
                assert name.encode() not in data, (f.name, name)
