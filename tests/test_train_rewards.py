"""The fidelity reward against an independent computation, and the TRL-facing rewards."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from evoq_train.rewards import (
    fidelity_reward,
    format_ok,
    format_reward,
    length_penalty,
    thurstone_fidelity,
)


def reference(scores_self, scores_partner, p_star, gamma=1e-6, eps=1e-6):
    """The formula with numpy + scipy (ddof=1), invalid entries masked."""
    s = np.array([np.nan if x is None else x for x in scores_self], dtype=float)
    p = np.array([np.nan if x is None else x for x in scores_partner], dtype=float)
    vs, vp = s[~np.isnan(s)], p[~np.isnan(p)]
    var_s = np.var(vs, ddof=1) if len(vs) > 1 else 0.0
    var_p = np.var(vp, ddof=1) if len(vp) > 1 else 0.0
    pk = norm.cdf((s - vp.mean()) / np.sqrt(var_s + var_p + gamma))
    r = np.sqrt(p_star * pk + eps) + np.sqrt((1 - p_star) * (1 - pk) + eps)
    return np.where(np.isnan(s), 0.0, r)


@pytest.mark.parametrize("p_star", [0.0, 0.5, 1.0, 0.3])
@pytest.mark.parametrize("seed", range(5))
def test_thurstone_fidelity_matches_scipy(p_star, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 33))
    scores_self = [round(float(x), 2) for x in rng.uniform(1, 5, k)]
    scores_partner = [round(float(x), 2) for x in rng.uniform(1, 5, k)]
    for i in rng.choice(k, size=k // 4, replace=False):  # unparseable answers
        scores_self[i] = None if i % 2 else float("nan")
    scores_partner[int(rng.integers(k))] = None
    got = thurstone_fidelity(scores_self, scores_partner, p_star)
    want = reference(scores_self, scores_partner, p_star)
    assert len(got) == k
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    invalid = [i for i, x in enumerate(scores_self) if x is None or math.isnan(x)]
    assert all(got[i] == 0.0 for i in invalid)


def test_thurstone_fidelity_literal_values():
    # self [4, 2], partner [3, 3]: var_self 2, var_partner 0, mean_partner 3.
    got = thurstone_fidelity([4.0, 2.0], [3.0, 3.0], 1.0, gamma=0.0, eps=0.0)
    pk = norm.cdf(1 / math.sqrt(2))
    assert got == pytest.approx([math.sqrt(pk), math.sqrt(1 - pk)], abs=1e-12)
    # p* = 0.5 and a score equal to the partner mean: p_k = 0.5 -> 2 * sqrt(0.25 + eps).
    assert thurstone_fidelity([3.0, 3.0], [3.0, 3.0], 0.5) == pytest.approx(
        [2 * math.sqrt(0.25 + 1e-6)] * 2, abs=1e-12)


def test_thurstone_fidelity_degenerate_groups():
    assert thurstone_fidelity([None, None], [3.0, 4.0], 1.0) == [0.0, 0.0]
    out = thurstone_fidelity([3.0, None], [None, float("nan")], 1.0)
    assert math.isnan(out[0]) and out[1] == 0.0
    with pytest.raises(ValueError):
        thurstone_fidelity([3.0], [3.0], 1.5)


@pytest.mark.parametrize("text, ok", [
    ("<think>sharp, little noise</think> \\boxed{4.25}", True),
    ("<think>a\nb</think>\nThe rating is boxed{3}.", True),
    ("\\boxed{4.25}", False),
    ("<think>no answer</think>", False),
    ("<think>x</think> \\boxed{abc}", False),  # unparseable: the lowest reward, no format credit
    ("<think>x</think> \\boxed{7}", False),  # out of [1, 5]
    ("<think>x</think> \\boxed{2} \\boxed{3}", False),  # conflicting boxes
    ("\\boxed{4} <think>late</think>", False),
    ("<think></think>\\boxed{4}", False),
    ("", False),
])
def test_format_ok(text, ok):
    assert format_ok(text) is ok


def _completions(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_fidelity_reward_groups_pairs_and_averages_partners(tmp_path):
    # Batch: pair P (x, y, p* = 1) and pair Q (x, z, p* = 0.5); 3 answers per group.
    box = "<think>t</think> \\boxed{{{}}}".format
    rows = [("P", "x", "y", 1.0, [4, 5, None]), ("P", "y", "x", 0.0, [2, 3, 2.5]),
            ("Q", "x", "z", 0.5, [3, 4, 4]), ("Q", "z", "x", 0.5, [1, "oops", 2])]
    pair_id, image_id, partner_id, p_self, texts = [], [], [], [], []
    for pid, img, other, p, scores in rows:
        for s in scores:
            pair_id.append(pid)
            image_id.append(img)
            partner_id.append(other)
            p_self.append(p)
            texts.append("no box" if s is None else box(s))
    metrics, extra = {}, {}
    audit = tmp_path / "audit.jsonl"
    fn = fidelity_reward(audit_path=audit)
    assert fn.__name__ == "evoq_fidelity"
    got = fn(prompts=[None] * 12, completions=_completions(texts), pair_id=pair_id,
             image_id=image_id, partner_id=partner_id, p_star_self=p_self,
             log_metric=lambda k, v: metrics.__setitem__(k, v),
             log_extra=lambda k, v: extra.__setitem__(k, v))
    S = {("P", "x"): [4, 5, None], ("P", "y"): [2, 3, 2.5], ("Q", "x"): [3, 4, 4],
         ("Q", "z"): [1, None, 2]}
    # x's answers in P: mean over its partners in the batch, y (p* 1) and z (from pair Q,
    # p* 0.5), each compared with that partner's answers.
    want_px = (reference(S["P", "x"], S["P", "y"], 1.0) + reference(S["P", "x"], S["Q", "z"], 0.5)) / 2
    want_py = reference(S["P", "y"], S["P", "x"], 0.0)
    want_qx = (reference(S["Q", "x"], S["Q", "z"], 0.5) + reference(S["Q", "x"], S["P", "y"], 1.0)) / 2
    want_qz = reference(S["Q", "z"], S["Q", "x"], 0.5)
    np.testing.assert_allclose(got, np.concatenate([want_px, want_py, want_qx, want_qz]),
                               atol=1e-12)
    assert metrics["parse_failure_rate"] == pytest.approx(2 / 12)
    valid = [4, 5, 2, 3, 2.5, 3, 4, 4, 1, 2]
    assert metrics["score_mean"] == pytest.approx(sum(valid) / len(valid))
    assert extra["parse_status"][2] == "no_box" and extra["score"][0] == 4.0
    seen = json.loads(audit.read_text())
    assert seen["pairs"] == {"P": {"x": 3, "y": 3}, "Q": {"x": 3, "z": 3}}


def test_fidelity_reward_refuses_a_pair_split_across_processes():
    fn = fidelity_reward()
    with pytest.raises(RuntimeError, match="without its partner"):
        fn(prompts=[None] * 2, completions=_completions(["\\boxed{3}"] * 2),
           pair_id=["P", "P"], image_id=["x", "x"], partner_id=["y", "y"],
           p_star_self=[1.0, 1.0])


def test_format_and_length_rewards():
    texts = ["<think>ok</think>\\boxed{3}", "3", "x" * 100]
    assert format_reward()(prompts=None, completions=_completions(texts)) == [1.0, 0.0, 0.0]
    assert length_penalty(50)(prompts=None, completions=texts) == [
        -len(texts[0]) / 50, -1 / 50, -1.0]
