"""The transformers engine's prompt prefixes on the tiny VLM: answers equal plain HF
``generate`` on the whole prompt (sampled and greedy, any packing), a prompt asked again
reuses its prefix and a prompt not asked again is freed, and a ``--stop`` run is reproducible
and resumes to the uninterrupted rows."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.votes import read_votes, spec
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.core.errors import EvoqError
from evoq_data.votes.run import run_vote

runner = CliRunner()


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    from evoq_data.generation.engines import get_engine

    eng = get_engine("transformers", str(tiny_vlm))
    yield eng
    eng.close()


def requests_of(pairs_file, reasoning: bool, again: bool = False):
    """Both shown orders of the first two pairs, of different sizes and seeds."""
    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.prompts import compare_prompt

    out = []
    for i, p in enumerate(pq.read_table(pairs_file).to_pylist()[:2]):
        for swapped, n in ((False, 3), (True, 2)):
            ab = ("a", "b")[::-1] if swapped else ("a", "b")
            out.append(GenRequest(tuple(p[f"image_{x}_path"] for x in ab),
                                  compare_prompt(reasoning), n, 40 + 10 * i + 5 * swapped,
                                  image_ids=tuple(p[f"image_{x}_id"] for x in ab),
                                  asked_again=again))
    return out


def plain_generate(eng, req, sampling) -> list[str]:
    """The engine's answers computed the plain way: HF generate on the whole prompt with
    num_return_sequences = n (the prompt prefilled n times), the same per-sample sampler."""
    import torch
    from transformers import LogitsProcessorList

    from evoq_data.generation.engines.hf import PerSampleSampler

    tok = eng.processor.tokenizer
    inputs = eng._inputs(req)
    do_sample = sampling.temperature > 0
    kw = dict(max_new_tokens=sampling.max_tokens, do_sample=do_sample,
              num_return_sequences=req.n if do_sample else 1, pad_token_id=tok.pad_token_id)
    if do_sample:
        sampler = PerSampleSampler(torch, range(req.seed, req.seed + req.n),
                                   sampling.temperature, sampling.top_p, eng.device)
        kw.update(temperature=1.0, top_p=1.0, top_k=0, min_p=None, typical_p=1.0,
                  logits_processor=LogitsProcessorList([sampler]))
    with torch.inference_mode():
        out = eng.net.generate(**inputs, **kw)
    texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts if do_sample else texts * req.n


@pytest.mark.parametrize("sampling", [dict(temperature=0.7, top_p=0.8), dict(temperature=0.0)])
def test_answers_equal_plain_generate_whatever_the_packing(engine, pairs_file, sampling):
    from evoq_data.generation.engines import Sampling

    s = Sampling(max_tokens=6, **sampling)
    reqs = requests_of(pairs_file, reasoning=sampling["temperature"] > 0)
    want = [plain_generate(engine, r, s) for r in reqs]
    if s.temperature > 0:
        assert len({t for ts in want for t in ts}) > 5  # the samples differ: a real check
    for batch_size in (64, 3):  # one generate call; requests packed by 3 rows (one each)
        engine.batch_size = batch_size
        assert engine.generate(reqs, s) == want
    engine.batch_size = 64


def test_an_engine_around_a_model_in_memory_answers_as_the_loaded_one(engine, tiny_vlm,
                                                                     pairs_file):
    """from_loaded (what bench/gpu_votes.py uses for its random 7B model) is the same engine:
    a copy of the loaded model and processor gives the same answers for the same seeds."""
    import copy

    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.engines.hf import TransformersEngine

    s = Sampling(temperature=0.9, max_tokens=5)
    reqs = requests_of(pairs_file, reasoning=True)
    other = TransformersEngine.from_loaded(copy.deepcopy(engine.net), engine.processor,
                                           model="in memory", batch_size=3)
    assert other.net is not engine.net and other.batch_size == 3
    assert other.generate(reqs, s) == engine.generate(reqs, s)
    assert other.answer_probs(reqs[:1]) == engine.answer_probs(reqs[:1])
    with pytest.raises(EvoqError, match="batch_size must be a whole number >= 1, got 0"):
        TransformersEngine.from_loaded(engine.net, engine.processor, model="m", batch_size=0)


def test_a_prompt_asked_again_keeps_its_prefix_until_a_call_leaves_it_out(engine, pairs_file):
    from evoq_data.generation.engines import Sampling

    s = Sampling(max_tokens=4)
    engine.prefixes.clear()
    kept, dropped = requests_of(pairs_file, True, again=True)[:2], requests_of(pairs_file, True)[2:]
    start = engine.prefixes.computed
    first = engine.generate(kept + dropped, s)
    assert engine.prefixes.computed - start == 4
    assert len(engine.prefixes.kept) == 2  # only the prompts marked asked_again
    # the next wave asks the kept prompts only: nothing computed, same answers
    assert engine.generate(kept, s) == first[:2]
    assert engine.prefixes.computed - start == 4
    # a call without them frees them; asking a freed prompt computes it again
    assert engine.generate(dropped, s) == first[2:]
    assert engine.prefixes.kept == {} and engine.prefixes.computed - start == 6


def test_stop_waves_mark_the_prompts_they_will_ask_again():
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.votes.core import _wave_requests
    from evoq_data.votes.plan import plan_votes

    pair = {"pair_id": "p", "image_a_path": "a", "image_b_path": "b", "image_a_id": "ia",
            "image_b_id": "ib"}
    plan = plan_votes("p", 8, 0, "balanced")
    waves = [_wave_requests(pair, plan, s, s + 2, compare_prompt()) for s in range(0, 8, 2)]
    assert [[req.asked_again for req, _ in w] for w in waves] == \
        [[True, True]] * 3 + [[False, False]]
    [(full, _), _] = _wave_requests(pair, plan, 0, 8, compare_prompt())  # --stop fixed
    assert not full.asked_again


def test_stopped_run_is_reproducible_and_resumes_to_the_same_rows(tiny_vlm, pairs_file,
                                                                   tmp_path):
    keys = ("pair_id", "vote_index", "swapped", "raw_text", "answer", "parse_status", "seed",
            "stop_reason")
    s = spec("transformers", str(tiny_vlm), max_tokens=6)
    common = dict(votes_per_pair=4, seed=5, order="balanced", stop="decided", wave=2,
                  quiet=True)

    def rows(out):
        return [tuple(r[k] for k in keys) for r in read_votes(out)]

    run_vote(pairs_file, s, tmp_path / "a", chunk_pairs=3, **common)
    want = rows(tmp_path / "a")
    assert len(want) == 4 * 6
    assert {r[-1] for r in want} == {"exhausted"}  # the random model's answers are invalid
    # an interrupted run: its first shard landed, its second never did (atomic rename)
    (tmp_path / "b").mkdir()
    for name in ("manifest.json", sorted(p.name for p in (tmp_path / "a").glob("votes-*"))[0]):
        shutil.copy(tmp_path / "a" / name, tmp_path / "b" / name)
    summary = run_vote(pairs_file, s, tmp_path / "b", chunk_pairs=2, **common)
    assert summary["pairs_already_done"] == 3
    assert rows(tmp_path / "b") == want  # the 3 pairs voted again, in other chunks


def test_bad_batch_size_is_refused(tiny_vlm, pairs_file, tmp_path):
    for value, shown in (("0", "0"), ("2.5", "2.5"), ("true", "True")):
        result = runner.invoke(app, ["vote", "--pairs", str(pairs_file), "--model",
                                     str(tiny_vlm), "--engine", "transformers", "--out",
                                     str(tmp_path / "v"), "-q", "--engine-arg",
                                     f"batch_size={value}"])
        assert_user_error(result, "batch_size must be a whole number >= 1", f"got {shown}")
    assert not (tmp_path / "v").exists()
