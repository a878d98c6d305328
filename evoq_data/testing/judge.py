"""A tiny judge with known skill: the tiny Qwen2.5-VL taught to answer the compare prompt by
brightness, for testing and measuring the loop on a CPU.

    python -m evoq_data.testing.tiny_vlm DIR --judge brightness                      # good
    python -m evoq_data.testing.tiny_vlm DIR --judge brightness --judge-skill weak

On the "quality = brightness" task (:mod:`evoq_data.testing.learning`: textures darkened by a
factor f in [0.1, 1], f is the true quality) a real VLM's pseudo-labels are noisy, and more so
when the two images are close. The judge reproduces that with a known noise model. Each
supervised step draws fresh pairs of textures with f uniform in [0.1, 1] and labels them as an
observer with a :class:`Skill` would: when the gap |f_first - f_second| is below the skill's
just-noticeable difference ``jnd`` it guesses (0 or 1, even odds); otherwise it calls the first
shown image better (answer 0) when ``f_first + e_1 > f_second + e_2``, with e_1, e_2
independent N(0, sigma^2) (a Thurstone observer), else 1. A judge that learned the labels
perfectly answers correctly with probability 0.5 below the jnd and
``Phi(gap / (sigma * sqrt(2)))`` above it (:func:`expected_accuracy`). :data:`SKILLS` names
two; the tiny model's own limits add to them, so the measured accuracy (docs/train.md, "A
judge with known skill"; bench/judge_skill.py) is what counts.

The answers have the paper's forms, so they go through the normal parser:

* reasoning prompt: ``<think>WORDS</think> \\boxed{B}``, WORDS one to
  :data:`MAX_THINK_WORDS` words drawn at random (the reasoning text varies in length and says
  nothing about the answer);
* no-reasoning prompt: the bare answer ``0`` or ``1``, as that prompt asks.

Batches alternate between the two prompts. It starts from a format warm-up
(:mod:`evoq_data.testing.warmup`) or from the raw model; everything is seeded. By default the
score prompt is not trained here, and in a model this small the compare training overwrites
it. ``scores="format"`` or ``"weak"`` (``--judge-scores``) makes every third batch of the
second phase a score-prompt batch, so the judge also answers the score prompt: with a uniform
random score (``format``: no quality information) or with a noisy brightness score (``weak``:
:func:`weak_score`). A weak judge with weak scores is the base of a pure self-evolution run:
weak skill on both prompts.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import NamedTuple

from evoq_data.testing.warmup import random_image, supervise


class Skill(NamedTuple):
    """A label observer: Thurstone noise ``sigma`` per image (units of f), and the gap below
    which it only guesses (``jnd``)."""

    sigma: float
    jnd: float = 0.0


#: The named skills (``--judge-skill``).
SKILLS = {"good": Skill(sigma=0.05), "weak": Skill(sigma=0.05, jnd=0.25)}
CLEAN = Skill(sigma=0.0)
TASKS = ("brightness",)
MAX_THINK_WORDS = 6
#: The reasoning's first word: which shown image it found better (answer 0, answer 1).
VERDICTS = ("first", "second")
#: Steps of the two phases (see :func:`train_judge`).
SEE_STEPS, ANSWER_STEPS = 400, 300
#: Format warm-up steps before the judge training when ``--warmup-steps`` is not given.
JUDGE_WARMUP_STEPS = 100
_FILLER = ("the", "image", "is", "sharper", "has", "less", "noise", "quality", "better")
BRIGHTNESS_RANGE = (0.1, 1.0)
#: ``--judge-scores``: what the judge's score-prompt batches teach (none: no such batches).
SCORE_SKILLS = ("none", "format", "weak")
#: Standard deviation (in score points) of the noise of :func:`weak_score`.
WEAK_SCORE_NOISE = 4.0


def think_text(better: int, pick: random.Random) -> str:
    """A reasoning text of 1 to MAX_THINK_WORDS words: the verdict, then random filler."""
    filler = [pick.choice(_FILLER) for _ in range(pick.randint(0, MAX_THINK_WORDS - 1))]
    return " ".join([VERDICTS[better], *filler])


def judge_answer(better: int, reasoning: bool, pick: random.Random) -> str:
    """The target text for answer ``better`` (0: first shown image, 1: second)."""
    if better not in (0, 1):
        raise ValueError(f"a compare answer is 0 or 1, got {better!r}")
    if not reasoning:
        return str(better)
    return f"<think>{think_text(better, pick)}</think> \\boxed{{{better}}}"


def noisy_label(f_first: float, f_second: float, skill: Skill, rng) -> int:
    """The observer's answer: 0 when it calls the first image brighter, else 1."""
    if abs(f_first - f_second) < skill.jnd:
        return int(rng.random() < 0.5)
    seen_first = f_first + skill.sigma * rng.standard_normal()
    seen_second = f_second + skill.sigma * rng.standard_normal()
    return 0 if seen_first > seen_second else 1


def expected_accuracy(gap: float, skill: Skill) -> float:
    """P(a vote names the brighter image) for a judge that learned the labels exactly."""
    gap = abs(gap)
    if gap < skill.jnd:
        return 0.5
    if skill.sigma == 0:
        return 1.0 if gap > 0 else 0.5
    return 0.5 * math.erfc(-gap / (skill.sigma * math.sqrt(2.0)) / math.sqrt(2.0))


def weak_score(f: float, rng) -> int:
    """A noisy brightness score in 1..5: f mapped linearly onto [1, 5], plus N(0, 4^2) noise,
    rounded and clipped (rank correlation with f: 0.25 for one answer, 0.46 for the mean of
    four, by simulation)."""
    lo, hi = BRIGHTNESS_RANGE
    x = 1.0 + 4.0 * (f - lo) / (hi - lo) + WEAK_SCORE_NOISE * rng.standard_normal()
    return int(min(5, max(1, round(x))))


def skill_of(name: str) -> Skill:
    if name not in SKILLS:
        raise ValueError(f"judge skill must be one of {', '.join(SKILLS)}, got {name!r}")
    return SKILLS[name]


def train_judge(model_in: str | Path, model_out: str | Path, *, task: str = "brightness",
                skill: str = "good", scores: str = "none", see_steps: int = SEE_STEPS, steps: int = ANSWER_STEPS,
                lr: float = 3e-3, batch_size: int = 8,
                seed: int = 0, image_size: int = 64, log_every: int = 100,
                quiet: bool = False) -> dict:
    """Teach ``model_in`` to judge ``task`` with ``skill``; save to ``model_out``; return the
    summary (also written as ``evoq_judge.json`` in ``model_out``).

    Two phases: ``see_steps`` steps on the no-reasoning prompt with noise-free labels (the
    model learns to see the brightness; in a model this small that takes a few hundred steps
    and happens abruptly), then ``steps`` steps alternating the reasoning and the no-reasoning
    prompt with the skill's noisy labels (both answer forms, and the skill's accuracy).
    ``scores`` other than "none": every third step of the second phase is a score-prompt batch
    instead (see the module docstring)."""
    import numpy as np

    from evoq_data.generation.prompts import compare_prompt, score_prompt
    from evoq_data.testing.warmup import SCORE_VALUES, answer

    if task not in TASKS:
        raise ValueError(f"judge task must be one of {', '.join(TASKS)}, got {task!r}")
    observer = skill_of(skill)
    if scores not in SCORE_SKILLS:
        raise ValueError(f"judge scores must be one of {', '.join(SCORE_SKILLS)}, got "
                         f"{scores!r}")
    if batch_size < 1 or see_steps < 0:
        raise ValueError("the judge needs batch_size >= 1 and see_steps >= 0")
    pick = random.Random(seed)
    rng = np.random.default_rng(seed + 2000)  # not the warm-up's or the task's image stream
    prompts = {True: compare_prompt(True), False: compare_prompt(False)}

    def score_batch():
        rows = []
        for _ in range(batch_size):
            f = float(rng.uniform(*BRIGHTNESS_RANGE))
            value = (str(weak_score(f, rng)) if scores == "weak" else pick.choice(SCORE_VALUES))
            rows.append(([random_image(rng, image_size, brightness=f)], answer(value)))
        return f"score-{scores}", score_prompt(True), rows

    def next_batch(step: int, proc):
        seeing = step <= see_steps
        if not seeing and scores != "none" and (step - see_steps) % 3 == 0:
            return score_batch()
        reasoning = not seeing and (step - see_steps) % 2 == 1
        noise = CLEAN if seeing else observer
        rows = []
        for _ in range(batch_size):
            f = rng.uniform(*BRIGHTNESS_RANGE, size=2)
            imgs = [random_image(rng, image_size, brightness=float(x)) for x in f]
            better = noisy_label(float(f[0]), float(f[1]), noise, rng)
            rows.append((imgs, judge_answer(better, reasoning, pick)))
        label = "see" if seeing else ("reasoning" if reasoning else "direct")
        return label, prompts[reasoning], rows

    return supervise(model_in, model_out, next_batch, steps=see_steps + steps, lr=lr, seed=seed,
                     summary={"task": task, "skill": skill, "scores": scores,
                              **observer._asdict(),
                              "see_steps": see_steps, "batch_size": batch_size,
                              "image_size": image_size},
                     name="judge", log_every=log_every, quiet=quiet)
