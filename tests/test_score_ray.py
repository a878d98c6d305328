"""`evoq-data score --runner ray` on a local Ray cluster: the local runner's rows, summary and
manifest, on the stochastic PIQE judge and on the tiny Qwen2.5-VL, with `--stop fixed` and
`--stop interval`; its options refused on the local runner."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.images import make_images
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.evaluate.score import run_score

TIMES = ("created_at",)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score-ray") / "pool"
    make_images(root, 5, seed=9, size=(64, 48))
    return root


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in pq.read_table(path).to_pylist()]


def _manifest(path: Path) -> dict:
    m = json.loads(path.with_name(path.stem + ".manifest.json").read_text())
    return {k: v for k, v in m.items() if k not in ("created_at", "command", "evoq_version")}


@pytest.mark.parametrize("judge", [
    pytest.param(lambda model: spec("piqe", engine_args={"random_crop": 0.7}), id="piqe"),
    # a transformers engine in each actor (~9 s); piqe checks the same identity fast
    pytest.param(lambda model: spec("transformers", str(model), max_tokens=6), id="tiny-vlm",
                 marks=pytest.mark.slow)])
def test_score_on_ray_equals_the_local_runner(cluster, pool, tiny_vlm, tmp_path, judge):
    the_spec = judge(tiny_vlm)
    local = run_score(pool, the_spec, tmp_path / "local.parquet", samples=3, seed=4,
                      chunk_images=2, quiet=True)
    on_ray = run_score(pool, the_spec, tmp_path / "ray.parquet", samples=3, seed=4,
                       chunk_images=2, quiet=True, runner="ray")
    want, got = _rows(tmp_path / "local.parquet"), _rows(tmp_path / "ray.parquet")
    assert len(want) == 5 * 3 and len({r["raw_text"] for r in want}) > 1
    assert got == want
    assert pq.read_table(tmp_path / "ray.summary.parquet").to_pylist() == \
        pq.read_table(tmp_path / "local.summary.parquet").to_pylist()
    assert _manifest(tmp_path / "ray.parquet") == _manifest(tmp_path / "local.parquet")
    assert on_ray["samples"] == local["samples"] == 15
    assert not (tmp_path / "ray.parts").exists()


@pytest.mark.slow  # a second Ray pool (~13 s); fast twins: test_score_on_ray_equals_the_local_runner[piqe] (both runners score a chunk through the same score_chunk) and test_score_stop.py::test_stopping_rows_are_the_first_n_of_the_full_run (where that call stops each image)
def test_score_on_ray_stops_each_image_where_the_local_runner_does(cluster, pool, tmp_path):
    """--stop interval: every image stops after the same wave on either runner (images in
    one chunk stop at different waves here), so the rows and the counts are the same."""
    the_spec = spec("piqe", engine_args={"random_crop": 0.7})
    args = dict(samples=8, seed=4, chunk_images=2, quiet=True, stop="interval", wave=2,
                width=0.04)
    local = run_score(pool, the_spec, tmp_path / "local.parquet", **args)
    on_ray = run_score(pool, the_spec, tmp_path / "ray.parquet", runner="ray", **args)
    want = _rows(tmp_path / "local.parquet")
    used = {}
    for r in want:
        used[r["image_id"]] = used.get(r["image_id"], 0) + 1
    assert sorted(set(used.values())) == [4, 6, 8]  # the rule stops images at each wave
    assert _rows(tmp_path / "ray.parquet") == want
    assert pq.read_table(tmp_path / "ray.summary.parquet").to_pylist() == \
        pq.read_table(tmp_path / "local.summary.parquet").to_pylist()
    assert _manifest(tmp_path / "ray.parquet") == _manifest(tmp_path / "local.parquet")
    keys = ("samples", "samples_planned", "stop_reasons")
    assert {k: on_ray[k] for k in keys} == {k: local[k] for k in keys}


def test_score_ray_options_need_the_ray_runner(pool, tmp_path):
    result = CliRunner().invoke(app, ["score", "--images", str(pool), "--engine", "piqe",
                                      "--workers", "2", "--out", str(tmp_path / "s.parquet")])
    assert_user_error(result, "--workers is for --runner ray")
    result = CliRunner().invoke(app, ["score", "--images", str(pool), "--engine", "piqe",
                                      "--runner", "dask", "--out", str(tmp_path / "s.parquet")])
    assert_user_error(result, "unknown --runner 'dask'")
    assert not list(tmp_path.iterdir())
