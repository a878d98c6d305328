"""`evoq-data vote --stop` and `--mode logprob`: the stopping rules on their own (hypothesis,
brute force, scipy), stopped runs against full runs on the stochastic PIQE judge and the tiny
VLM, resume and sharding with stopping on, logprob probabilities against the model's logits,
and the bad combinations refused through the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error
from fixtures.votes import read_votes, spec
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from evoq_data.cli import app
from evoq_data.votes.plan import plan_votes
from evoq_data.votes.run import run_vote
from evoq_data.votes.stop import (
    beta_tails,
    can_stop,
    is_confident,
    is_decided,
    stop_reason,
)

runner = CliRunner()
COMPARE = ("pair_id", "vote_index", "swapped", "raw_text", "answer", "winner_id",
           "parse_status", "seed", "votes_planned")


def eq1(a: int, b: int) -> float:
    """Eq. 1's hard label of image A from the valid vote counts."""
    return 1.0 if a > b else 0.0 if a < b else 0.5


def counts(stream) -> tuple[int, int]:
    return sum(v == "A" for v in stream), sum(v == "B" for v in stream)


def run_stream(stream: list[str], wave: int, stop: str, confidence=None):
    """The stopping loop of vote_chunk on a known vote stream: (votes used, reason)."""
    k = len(stream)
    for end in range(wave, k + wave, wave):
        end = min(end, k)
        reason = stop_reason(*counts(stream[:end]), end, k, stop, confidence)
        if reason is not None:
            return end, reason
    raise AssertionError("never stopped")


# --- the rules on their own ------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.integers(1, 16).flatmap(lambda h: st.lists(votes, min_size=2 * h, max_size=2 * h)),
       st.integers(1, 4), st.sampled_from([("decided", None), ("confident", 0.9),
                                           ("confident", 0.99)]))
def test_pair_votes_stop_where_checking_every_wave_end_stops(stream, half_wave, rule):
    """`PairVotes` asks through wave ends where no answer could stop the pair; it must ask
    the same votes and stop at the same vote, for the same reason, as checking every end."""
    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.votes.core import PairVotes
    from evoq_data.votes.plan import VoteSettings

    stop, c = rule
    pv = PairVotes({"pair_id": "p", "image_a_path": "a.png", "image_b_path": "b.png",
                    "image_a_id": "ia", "image_b_id": "ib"},
                   VoteSettings(prompt=compare_prompt(True), sampling=Sampling(),
                                votes_per_pair=len(stream), order="balanced", stop=stop,
                                wave=2 * half_wave, confidence=c))

    def text(v):  # the stream's vote v as the answer naming A's or B's shown position
        if stream[v] == "x":
            return "no answer"
        return f"\\boxed{{{int(pv.plan.swapped[v]) ^ (stream[v] == 'B')}}}"

    reason = None
    while reason is None:
        start, end = pv.next_wave()
        assert end > start
        reason = pv.take({v: text(v) for v in range(start, end)})
    assert (len(pv.got), reason) == run_stream(stream, 2 * half_wave, stop, c)
    assert pv.tally == list(counts(stream[:len(pv.got)]))


def test_wave_ends_where_no_count_can_stop_are_skipped():
    """`can_stop` against the rules worked out by hand, and `PairVotes` asking through the
    ends it skips: decided needs a > b + (K - n) with a <= n, so n > K / 2; a unanimous
    confident count of a votes has P = 1 - 2^-(a + 1), >= 0.99 from a = 6."""
    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.votes.core import PairVotes
    from evoq_data.votes.plan import VoteSettings

    def ends(k, stop, c=None, a=0, b=0, asked=0):
        return [n for n in range(asked + 1, k + 1) if can_stop(a, b, asked, n, k, stop, c)]

    # the one-sided shortcut against every split of the votes between (invalid ones too)
    for k, stop, c in ((32, "decided", None), (32, "confident", 0.99), (20, "confident", 0.9)):
        for asked in range(0, k, 3):
            for a in range(asked + 1):
                for b in range(asked + 1 - a):
                    for n in range(asked + 1, k + 1, 2):
                        m = n - asked
                        brute = n >= k or any(
                            stop_reason(a + da, b + db, n, k, stop, c) is not None
                            for da in range(m + 1) for db in range(m + 1 - da))
                        assert can_stop(a, b, asked, n, k, stop, c) == brute, (a, b, asked, n)

    assert ends(32, "decided") == list(range(17, 33))
    assert ends(32, "confident", 0.99) == list(range(6, 33))
    assert ends(32, "fixed") == [32]
    assert ends(8, "decided") == [5, 6, 7, 8]
    # from counts so far: at 4-4 after 8 votes, P(p > 1/2) = P(Bin(a + 5, 1/2) <= a) is
    # 0.975 at 12-4 (n = 16), 0.985 at 13-4, 0.990 at 14-4 (n = 18)
    assert ends(32, "confident", 0.99, 4, 4, 8)[0] == 18
    # 12-12 after 24: 12 + m > 12 + (32 - 24 - m) from m = 5 on
    assert ends(32, "decided", None, 12, 12, 24) == list(range(29, 33))
    assert ends(32, "decided", None, 20, 3, 24)[0] == 25  # 20 > 3 + 7

    def first_requests(stop, confidence=None, wave=8):
        pv = PairVotes({"pair_id": "p", "image_a_path": "a.png", "image_b_path": "b.png",
                        "image_a_id": "ia", "image_b_id": "ib"},
                       VoteSettings(prompt=compare_prompt(True), sampling=Sampling(),
                                    votes_per_pair=32, order="balanced", stop=stop, wave=wave,
                                    confidence=confidence))
        return pv, pv.next_wave(), [req.n for req, _ in pv.requests()]

    pv, span, ns = first_requests("decided")
    assert span == (0, 24) and ns == [12, 12]   # not 8, then 8, then 8
    # a 12-12 split after 24 votes: undecided, so the last 8 come in one more request
    # vote v is for A (shown at position int(swapped)) when v is even, else for B
    answers = {v: f"<think>t</think> \\boxed{{{int(pv.plan.swapped[v]) ^ (v % 2)}}}"
               for v in range(24)}
    assert pv.take(answers) is None and pv.tally == [12, 12]
    assert pv.next_wave() == (24, 32)
    assert first_requests("decided", wave=2)[1] == (0, 18)
    assert first_requests("confident", 0.99)[1:] == ((0, 8), [4, 4])
    # a confident pair at 4-4 after its first wave cannot stop at 16: 16 more at once
    pv = first_requests("confident", 0.99)[0]
    split = {v: f"<think>t</think> \\boxed{{{int(pv.plan.swapped[v]) ^ (v % 2)}}}"
             for v in range(8)}
    assert pv.take(split) is None and pv.tally == [4, 4] and pv.next_wave() == (8, 24)
    assert first_requests("fixed")[1:] == ((0, 32), [16, 16])


votes = st.sampled_from("ABx")  # x: an invalid vote


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 24).flatmap(lambda h: st.lists(votes, min_size=2 * h, max_size=2 * h)),
       st.integers(1, 8))
def test_decided_stop_gives_the_full_k_label(stream, half_wave):
    n, reason = run_stream(stream, 2 * half_wave, "decided")
    assert eq1(*counts(stream[:n])) == eq1(*counts(stream))
    assert reason == ("exhausted" if n == len(stream) else "decided")


def test_is_decided_is_exactly_when_no_completion_changes_the_label():
    for k in range(1, 7):
        for n in range(k + 1):
            for a in range(n + 1):
                for b in range(n - a + 1):
                    labels = {eq1(a + sum(c == "A" for c in rest), b + sum(c == "B" for c in rest))
                              for rest in itertools.product("ABx", repeat=k - n)}
                    assert is_decided(a, b, n, k) == (len(labels) == 1), (a, b, n, k)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 80), st.integers(0, 80),
       st.floats(0.5, 1.0, exclude_min=True, exclude_max=True))
def test_beta_bound_against_scipy(a, b, c):
    from scipy.stats import beta

    below, above = beta_tails(a, b)
    assert float(below) == pytest.approx(beta.cdf(0.5, 1 + a, 1 + b), abs=1e-12)
    assert float(above) == pytest.approx(beta.sf(0.5, 1 + a, 1 + b), abs=1e-12)
    assert below + above == 1
    # it never stops before its stated condition: P(p > 1/2) >= C or P(p < 1/2) >= C
    if is_confident(a, b, c):
        assert max(beta.sf(0.5, 1 + a, 1 + b), beta.cdf(0.5, 1 + a, 1 + b)) >= c - 1e-12
    else:
        assert max(beta.sf(0.5, 1 + a, 1 + b), beta.cdf(0.5, 1 + a, 1 + b)) < c + 1e-12


def test_beta_bound_known_values():
    # Beta(1 + 7, 1 + 0): P(p > 1/2) = 1 - 2^-8
    assert beta_tails(7, 0) == (pytest.approx(1 / 256), pytest.approx(255 / 256))
    assert is_confident(7, 0, 0.99) and not is_confident(6, 0, 0.995)
    assert not is_confident(5, 5, 0.51)  # a tie is never confident


def test_stop_reason_precedence():
    assert stop_reason(3, 0, 4, 8, "fixed") is None
    assert stop_reason(3, 0, 8, 8, "fixed") == "fixed"
    assert stop_reason(8, 0, 8, 8, "decided") == "exhausted"
    assert stop_reason(5, 0, 5, 8, "decided") == "decided"  # 5 > 0 + 3
    assert stop_reason(5, 0, 5, 8, "confident", 0.9) == "decided"  # decided wins a tie
    assert stop_reason(4, 0, 4, 8, "confident", 0.9) == "confident"  # 1 - 2^-5 >= 0.9
    assert stop_reason(4, 0, 4, 8, "decided") is None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16).flatmap(lambda h: st.lists(votes, min_size=2 * h, max_size=2 * h)),
       st.integers(1, 4), st.sampled_from([0.9, 0.99, 0.999]))
def test_confident_stops_only_at_wave_ends_and_when_its_bound_holds(stream, half_wave, c):
    wave = 2 * half_wave
    n, reason = run_stream(stream, wave, "confident", c)
    assert n % wave == 0 or n == len(stream)
    a, b = counts(stream[:n])
    if reason == "confident":
        assert is_confident(a, b, c) and not is_decided(a, b, n, len(stream))
    # at every earlier wave end, neither rule held
    for end in range(wave, n, wave):
        a, b = counts(stream[:end])
        assert not is_decided(a, b, end, len(stream)) and not is_confident(a, b, c)


def test_balanced_plan_is_balanced_in_every_consecutive_two():
    for i in range(50):
        plan = plan_votes(f"p{i}", 32, 3, "balanced")
        assert (plan.swapped[0::2] != plan.swapped[1::2]).all()
        for v in range(32):  # vote v's seed: its order's base + its rank in that order
            base = plan.seed_swapped if plan.swapped[v] else plan.seed_unswapped
            assert plan.seed_of(v) == base + int((plan.swapped[:v] == plan.swapped[v]).sum())
    firsts = np.array([plan_votes(f"p{i}", 2, 0, "balanced").swapped[0] for i in range(400)])
    assert 0.4 < firsts.mean() < 0.6  # a fair coin picks which order comes first


# --- the stochastic PIQE judge ---------------------------------------------------------------

pytest.importorskip("pypiqe")


@pytest.fixture(scope="module")
def photo_pairs(tmp_path_factory) -> Path:
    """10 pairs of a photo blurred to 5 levels: clear pairs and close ones."""
    from PIL import Image, ImageFilter
    from skimage import data

    from evoq_data.pairs.sample import run_pairs

    root = tmp_path_factory.mktemp("stop-pairs")
    photo = Image.fromarray(data.astronaut()).resize((128, 128))
    (root / "pool").mkdir()
    for i, radius in enumerate((0, 0.6, 0.8, 1.6, 3.0)):
        photo.filter(ImageFilter.GaussianBlur(radius)).save(root / "pool" / f"b{i}.png")
    run_pairs(str(root / "pool"), 10, 0, root / "pairs.parquet", quiet=True)
    return root / "pairs.parquet"


@pytest.fixture(scope="module")
def few_pairs(photo_pairs) -> Path:
    """The first 3 of those pairs (the tiny VLM's tests: its forward passes are the cost)."""
    out = photo_pairs.with_name("few.parquet")
    pq.write_table(pq.read_table(photo_pairs).slice(0, 3), out)
    return out


PIQE = spec("piqe", engine_args={"random_crop": 0.6})


def vote(pairs, out, **kw):
    base = dict(votes_per_pair=16, seed=4, order="balanced", chunk_pairs=3, quiet=True)
    return run_vote(pairs, PIQE, out, **{**base, **kw})


def by_pair(rows):
    out = {}
    for r in rows:
        out.setdefault(r["pair_id"], []).append(r)
    return out


@pytest.fixture(scope="module")
def full_run(photo_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "votes"
    vote(photo_pairs, out)
    return read_votes(out)


def label(rows) -> float:
    return eq1(sum(r["winner_id"] == r["image_a_id"] for r in rows),
               sum(r["winner_id"] == r["image_b_id"] for r in rows))


@pytest.mark.parametrize(("stop", "confidence"), [("decided", None), ("confident", 0.99)])
def test_stopped_votes_are_the_first_votes_of_the_full_run(photo_pairs, full_run, tmp_path,
                                                           stop, confidence):
    summary = vote(photo_pairs, tmp_path / "v", stop=stop, wave=4, confidence=confidence)
    full = by_pair(full_run)
    stopped = by_pair(read_votes(tmp_path / "v"))
    assert set(stopped) == set(full)
    assert {r["stop_reason"] for r in full_run} == {"fixed"}
    used = 0
    for pid, rows in stopped.items():
        n = len(rows)
        used += n
        assert n % 4 == 0 and 4 <= n <= 16
        assert [tuple(r[c] for c in COMPARE) for r in rows] == \
            [tuple(r[c] for c in COMPARE) for r in full[pid][:n]]
        assert len({r["stop_reason"] for r in rows}) == 1
        reason = rows[0]["stop_reason"]
        assert reason == "exhausted" if n == 16 else reason in {"decided", "confident"}
        if stop == "decided":
            assert label(rows) == label(full[pid])
        assert all(r["votes_planned"] == 16 and r["prob_0"] is None for r in rows)
    assert summary["votes"] == used and summary["votes_planned"] == 16 * len(full)
    assert sum(summary["stop_reasons"].values()) == len(full)
    assert used < 16 * len(full)  # stopping saved votes on these pairs
    # the votes disagree (random crops), so some pairs need more than one wave
    assert any(0 < sum(r["answer"] == 0 for r in rows) < 16 for rows in full.values())
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert (manifest["stop"], manifest["wave"], manifest["confidence"], manifest["mode"]) == \
        (stop, 4, confidence, "sample")
    assert manifest["model"] == "piqe+random_crop=0.6"


def test_resume_and_shards_with_stopping_give_the_uninterrupted_rows(photo_pairs, tmp_path):
    keys = ("pair_id", "vote_index", "raw_text", "seed", "stop_reason", "winner_id")

    def rows(out):
        return [tuple(r[k] for k in keys) for r in read_votes(out)]

    vote(photo_pairs, tmp_path / "ref", stop="decided", wave=4)
    want = rows(tmp_path / "ref")
    # an interrupted run: its last shards never appeared (shards land by atomic rename)
    vote(photo_pairs, tmp_path / "cut", stop="decided", wave=4)
    shards = sorted((tmp_path / "cut").glob("votes-*.parquet"))
    for shard in shards[1:]:
        shard.unlink()
    summary = vote(photo_pairs, tmp_path / "cut", stop="decided", wave=4, chunk_pairs=2)
    assert summary["pairs_already_done"] == len(pq.read_table(shards[0]).column("pair_id").unique())
    assert rows(tmp_path / "cut") == want
    for i in range(3):
        vote(photo_pairs, tmp_path / "sharded", stop="decided", wave=4, num_shards=3,
             shard_index=i)
    assert rows(tmp_path / "sharded") == want
    # other stop settings into the same folder are refused, naming the difference
    from evoq_data.core.errors import EvoqError

    with pytest.raises(EvoqError, match="wave"):
        vote(photo_pairs, tmp_path / "ref", stop="decided", wave=8)
    with pytest.raises(EvoqError, match="stop"):
        vote(photo_pairs, tmp_path / "ref")


# --- the transformers engine on the tiny VLM --------------------------------------------------

def test_transformers_samples_do_not_depend_on_the_request_size(tiny_vlm, few_pairs):
    from evoq_data.generation.engines import GenRequest, Sampling, get_engine
    from evoq_data.generation.prompts import compare_prompt

    eng = get_engine("transformers", str(tiny_vlm))
    pair = pq.read_table(few_pairs).to_pylist()[0]
    images = (pair["image_a_path"], pair["image_b_path"])
    for sampling in (Sampling(max_tokens=5), Sampling(max_tokens=5, temperature=0.7, top_p=0.8)):
        full, part, one = eng.generate([GenRequest(images, compare_prompt(False), 6, 100),
                                        GenRequest(images, compare_prompt(False), 2, 104),
                                        GenRequest(images, compare_prompt(False), 1, 101)],
                                       sampling)
        assert part == full[4:] and one == full[1:2]
        assert len(set(full)) > 1  # the samples differ from one another


def test_transformers_stopped_run_equals_the_full_run(tiny_vlm, few_pairs, tmp_path):
    s = spec("transformers", str(tiny_vlm), max_tokens=4)
    common = dict(votes_per_pair=4, seed=2, order="balanced", quiet=True)
    run_vote(few_pairs, s, tmp_path / "full", **common)
    run_vote(few_pairs, s, tmp_path / "stop", stop="decided", wave=2, **common)
    full, stopped = by_pair(read_votes(tmp_path / "full")), by_pair(read_votes(tmp_path / "stop"))
    for pid, rows in stopped.items():
        assert [tuple(r[c] for c in COMPARE) for r in rows] == \
            [tuple(r[c] for c in COMPARE) for r in full[pid][: len(rows)]]
        assert label(rows) == label(full[pid])


def test_logprob_rows_equal_a_softmax_of_the_models_logits(tiny_vlm, few_pairs, tmp_path):
    import torch

    from evoq_data.generation.engines import get_engine
    from evoq_data.generation.prompts import chat_messages, compare_prompt

    out = tmp_path / "lp"
    summary = run_vote(few_pairs, spec("transformers", str(tiny_vlm), reasoning=False), out,
                       mode="logprob", quiet=True)
    rows = read_votes(out)
    pairs = pq.read_table(few_pairs).to_pylist()
    assert summary["votes"] == len(rows) == 2 * len(pairs)
    # independently: generate's own first-step logits (not the engine's forward pass)
    eng = get_engine("transformers", str(tiny_vlm))
    tok = eng.processor.tokenizer
    ids = [tok.convert_tokens_to_ids("0"), tok.convert_tokens_to_ids("1")]
    from PIL import Image

    for r in rows:
        shown = ((r["image_b_path"], r["image_a_path"]) if r["swapped"]
                 else (r["image_a_path"], r["image_b_path"]))
        images = [Image.open(p).convert("RGB") for p in shown]
        text = eng.processor.apply_chat_template(chat_messages(compare_prompt(False), images),
                                                 tokenize=False, add_generation_prompt=True)
        inputs = eng.processor(text=[text], images=images, return_tensors="pt")
        with torch.inference_mode():
            gen = eng.net.generate(**inputs, max_new_tokens=1, do_sample=False,
                                   output_logits=True, return_dict_in_generate=True,
                                   pad_token_id=tok.pad_token_id)
        l0, l1 = (float(x) for x in gen.logits[0][0, ids].double())
        p0 = 1 / (1 + np.exp(l1 - l0))
        assert r["prob_0"] == pytest.approx(p0, abs=1e-6)
        assert r["prob_0"] + r["prob_1"] == pytest.approx(1, abs=1e-12)
        assert r["vote_index"] == int(r["swapped"])
        assert r["answer"] == (1 if r["prob_1"] > r["prob_0"] else 0)
        shown_ids = ((r["image_b_id"], r["image_a_id"]) if r["swapped"]
                     else (r["image_a_id"], r["image_b_id"]))
        assert r["winner_id"] == shown_ids[r["answer"]]
        assert r["raw_text"] == f"P(0)={r['prob_0']:.6f} P(1)={r['prob_1']:.6f}"
        assert (r["parse_status"], r["stop_reason"], r["votes_planned"], r["seed"]) == \
            ("ok", "fixed", 2, None)
    assert len({r["prob_0"] for r in rows}) > 1  # probabilities differ across pairs/orders
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["mode"], manifest["votes_per_pair"]) == ("logprob", 2)


def test_sampled_first_tokens_converge_to_the_logprob_probabilities(tiny_vlm, few_pairs):
    """Samples of the first answer token, restricted to "0"/"1" (as vLLM's allowed_token_ids
    does), drawn by the engine's own per-sample sampler: their fraction of "0" approaches the
    logprob mode's P("0") within binomial error."""
    import torch
    from transformers import LogitsProcessorList

    from evoq_data.generation.engines import GenRequest, get_engine
    from evoq_data.generation.engines.hf import PerSampleSampler
    from evoq_data.generation.prompts import compare_prompt

    eng = get_engine("transformers", str(tiny_vlm))
    ids = list(eng.answer_token_ids())

    def only_answers(input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, ids] = scores[:, ids]
        return masked

    k = 600
    for pair in pq.read_table(few_pairs).to_pylist()[:2]:
        req = GenRequest((pair["image_a_path"], pair["image_b_path"]), compare_prompt(False),
                         k, 7)
        [(p0, _)] = eng.answer_probs([req])
        inputs = eng._inputs(req)
        sampler = PerSampleSampler(torch, range(req.seed, req.seed + k), 1.0, 1.0, eng.device)
        with torch.inference_mode():
            out = eng.net.generate(**inputs, max_new_tokens=1, do_sample=True,
                                   num_return_sequences=k, top_k=0, pad_token_id=0,
                                   logits_processor=LogitsProcessorList([only_answers,
                                                                          sampler]))
        first = out[:, inputs["input_ids"].shape[1]].tolist()
        assert set(first) <= set(ids)
        fraction = first.count(ids[0]) / k
        assert abs(fraction - p0) < 4 * np.sqrt(p0 * (1 - p0) / k) + 1e-9, (fraction, p0)


# --- bad combinations, through the CLI --------------------------------------------------------

@pytest.mark.parametrize(("args", "fragments"), [
    (["--stop", "decided"], ["--stop decided needs --order balanced"]),
    (["--stop", "decided", "--order", "balanced", "--wave", "3"], ["--wave must be an even"]),
    (["--stop", "confident", "--order", "balanced"], ["needs --confidence"]),
    (["--stop", "confident", "--order", "balanced", "--confidence", "1"],
     ["--confidence must be in (0.5, 1)"]),
    (["--stop", "decided", "--order", "balanced", "--confidence", "0.9"],
     ["--confidence is for --stop confident"]),
    (["--stop", "soon"], ["unknown --stop 'soon'"]),
    (["--mode", "exact"], ["unknown --mode 'exact'"]),
    (["--mode", "logprob"], ["needs --no-reasoning"]),
    (["--mode", "logprob", "--no-reasoning", "-k", "8"], ["2 rows per pair", "got 8"]),
    (["--mode", "logprob", "--no-reasoning", "--temperature", "0.7"], ["--temperature 1"]),
    (["--mode", "logprob", "--no-reasoning", "--stop", "decided", "--order", "balanced"],
     ["is for --mode sample"]),
])
def test_bad_stop_and_mode_combinations(photo_pairs, tiny_vlm, tmp_path, args, fragments):
    res = runner.invoke(app, ["vote", "--pairs", str(photo_pairs), "--model", str(tiny_vlm),
                              "--out", str(tmp_path / "v"), "-q", *args])
    assert_user_error(res, *fragments)
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize(("args", "fragments"), [
    (["--mode", "logprob", "--no-reasoning"], ["engine 'piqe' gives no token probabilities"]),
    (["--engine-arg", "random_crop=1.5"], ["random_crop must be a number in (0, 1]", "1.5"]),
    (["--engine-arg", "random_crop=0"], ["random_crop must be a number in (0, 1]"]),
])
def test_bad_piqe_settings(photo_pairs, tmp_path, args, fragments):
    res = runner.invoke(app, ["vote", "--pairs", str(photo_pairs), "--engine", "piqe",
                              "--out", str(tmp_path / "v"), "-q", *args])
    assert_user_error(res, *fragments)
    assert not (tmp_path / "v").exists()
