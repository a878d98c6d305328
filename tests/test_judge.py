"""The tiny brightness judge's targets and noise model (evoq_data.testing.judge).

The judge's measured skill (per-vote accuracy by brightness gap through `evoq-data vote`) is in
docs/train.md and comes from bench/judge_skill.py; here: its training targets are answers the
real parser reads with the intended value, and its label noise is the Thurstone model it
claims (checked against scipy's normal CDF and by simulation).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from evoq_data.generation.parse import OK, parse_compare
from evoq_data.testing.judge import (
    MAX_THINK_WORDS,
    SKILLS,
    VERDICTS,
    Skill,
    expected_accuracy,
    judge_answer,
    noisy_label,
    skill_of,
)


@pytest.mark.parametrize("reasoning", [True, False])
@pytest.mark.parametrize("better", [0, 1])
def test_targets_parse_to_the_intended_answer(better, reasoning):
    pick = random.Random(better + 2 * reasoning)
    texts = [judge_answer(better, reasoning, pick) for _ in range(200)]
    assert all(parse_compare(t, reasoning) == (better, OK) for t in texts)
    if reasoning:
        words = [t.split("</think>")[0].removeprefix("<think>").split() for t in texts]
        assert {len(w) for w in words} == set(range(1, MAX_THINK_WORDS + 1))  # varying length
        assert all(w[0] == VERDICTS[better] and not set(w[1:]) & set(VERDICTS) for w in words)
        assert all(t.startswith("<think>") and t.endswith(f"</think> \\boxed{{{better}}}")
                   for t in texts)
    else:
        assert set(texts) == {str(better)}  # the bare answer the direct prompt asks for


def test_bad_answer_and_skill_are_refused():
    with pytest.raises(ValueError, match="0 or 1"):
        judge_answer(2, True, random.Random(0))
    with pytest.raises(ValueError, match="good, weak"):
        skill_of("excellent")


@pytest.mark.parametrize(("gap", "skill"), [
    (0.0, Skill(0.5)), (0.05, Skill(0.05)), (0.2, Skill(0.5)), (0.4, Skill(0.3)),
    (0.3, Skill(0.05, jnd=0.4)), (0.45, Skill(0.05, jnd=0.4)), (0.45, Skill(0.3, jnd=0.4)),
])
def test_noise_model_matches_its_formula(gap, skill):
    """Below the jnd a coin flip, above it Thurstone: against scipy and by simulation."""
    from scipy.stats import norm

    want = 0.5 if gap < skill.jnd else norm.cdf(gap / (skill.sigma * np.sqrt(2)))
    assert expected_accuracy(gap, skill) == pytest.approx(want, abs=1e-12)
    rng = np.random.default_rng(0)
    n = 20000
    f_first = 0.3 + gap
    right = sum(noisy_label(f_first, 0.3, skill, rng) == 0 for _ in range(n))
    assert right / n == pytest.approx(want, abs=4 * np.sqrt(want * (1 - want) / n) + 1e-3)


def test_skills_are_ordered():
    gaps = np.linspace(0, 0.9, 91)
    good = [expected_accuracy(g, SKILLS["good"]) for g in gaps]
    weak = [expected_accuracy(g, SKILLS["weak"]) for g in gaps]
    assert all(w <= g for w, g in zip(weak, good, strict=True)) and sum(weak) < sum(good)
    assert expected_accuracy(0.3, Skill(0.0)) == 1.0 and expected_accuracy(0.0, Skill(0.0)) == 0.5


def test_weak_score_is_the_documented_noisy_linear_map():
    """weak_score(f) = clip(round(1 + 4 (f - 0.1) / 0.9 + 4 z), 1, 5), z ~ N(0, 1) from the
    generator it is given; recomputed here from the same draws."""
    from evoq_data.testing.judge import WEAK_SCORE_NOISE, weak_score

    fs = np.linspace(0.1, 1.0, 50)
    got = [weak_score(float(f), np.random.default_rng(i)) for i, f in enumerate(fs)]
    want = [int(np.clip(np.round(1 + 4 * (f - 0.1) / 0.9 + WEAK_SCORE_NOISE
                                 * np.random.default_rng(i).standard_normal()), 1, 5))
            for i, f in enumerate(fs)]
    assert got == want and set(got) <= {1, 2, 3, 4, 5}
    rng = np.random.default_rng(0)
    f = rng.uniform(0.1, 1.0, 4000)
    from scipy.stats import spearmanr
    rho = spearmanr(f, [weak_score(float(x), rng) for x in f])[0]
    assert 0.2 < rho < 0.3  # weak, not none: the docstring's 0.25


def test_judge_scores_choice_is_checked(tmp_path):
    from evoq_data.testing.judge import train_judge

    with pytest.raises(ValueError, match="judge scores must be one of none, format, weak"):
        train_judge(tmp_path / "in", tmp_path / "out", scores="strong")
