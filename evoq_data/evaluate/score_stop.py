"""When an image has had enough score samples: the stopping rules of ``evoq-data score --stop``.

Pure functions of an image's valid scores so far, so they are tested on their own and both
runners (local, Ray) and the check at assembly stop at the same sample:

* ``fixed`` (the paper): all K samples, always.
* ``interval``: samples are asked in waves of ``--wave``; after each wave, with ``n`` valid scores of
  mean m and sample standard deviation s (N-1), the image stops once the two-sided Student
  t interval of its mean at confidence C, ``m ± t((1 + C) / 2, n - 1) · s / √n``, is
  narrower than ``--width``, and never asks more than K.

Why a t interval: the reported score is the mean of the valid samples, and the t interval is
the textbook interval of a mean whose spread is estimated from the same few samples (its
quantile grows as n shrinks, so two lucky close answers do not stop an image). The scores
are bounded (1..5) and asked to two decimals, so they are not normal; the interval is a rule
for when to stop asking, not a coverage guarantee, and what it costs is measured
(docs/evaluate.md).

A run of identical answers has s = 0 and a zero-width interval. The rule therefore also
needs **two waves' worth of valid answers** (2 x wave, invalid answers not counted) before
it may stop: an image whose 2 x wave valid answers all agree stops there. (The answers of
such a run still bound how often the judge says anything else: below 3 / (2 x wave) at 95%,
the rule of three.) A larger ``--wave`` demands more; there is no variance floor, which
would make every width a fixed sample count for a judge that agrees with itself. Invalid
answers count towards K but not towards the interval.

Every comparison is on float64 values computed the same way from the scores in sample
order, so each runner and a rerun make the same decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evoq_data.core.errors import EvoqError

STOPS = ("fixed", "interval")
STOP_REASONS = ("fixed", "interval", "exhausted")
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class ScoreStop:
    """How many score samples an image gets: K (``samples``) and the rule (checked, with
    defaults filled in, by :func:`score_stop`). ``wave`` is K for ``fixed``."""

    samples: int
    stop: str = "fixed"
    wave: int = 0
    width: float | None = None
    confidence: float | None = None

    def identity(self) -> dict:
        """The settings and manifest fields of the rule (null where it does not act)."""
        interval = self.stop == "interval"
        return {"stop": self.stop, "wave": self.wave if interval else None,
                "width": self.width, "confidence": self.confidence}

    def next_end(self, asked: int) -> int:
        """The sample count after the next wave, from ``asked``: ``wave`` more, but at least
        two waves (the interval rule cannot stop before two waves of valid scores, so a
        check after the first is a barrier that buys nothing), at most K."""
        return min(max(asked + self.wave, 2 * self.wave), self.samples)

    def wave_ends(self) -> list[int]:
        """The sample counts after each wave: W, 2W, ... and K last."""
        return list(range(self.wave, self.samples, self.wave)) + [self.samples]


def score_stop(samples: int, stop: str = "fixed", *, wave: int | None = None,
               width: float | None = None, confidence: float | None = None) -> ScoreStop:
    """The checked rule of a score run (one line for a bad combination).

    ``--stop interval`` needs ``--width``; ``--wave`` defaults to K/4 (at least 2), so the
    earliest stop is at half of K, and ``--confidence`` to 0.95. ``--wave``, ``--width``
    and ``--confidence`` are refused with ``--stop fixed``, where they would do nothing."""
    if stop not in STOPS:
        raise EvoqError(f"unknown --stop {stop!r}; choose one of {', '.join(STOPS)}")
    if stop == "fixed":
        given = [name for name, value in (("--wave", wave), ("--width", width),
                                          ("--confidence", confidence)) if value is not None]
        if given:
            raise EvoqError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                            "--stop interval, not --stop fixed")
        return ScoreStop(samples, "fixed", samples)
    if width is None:
        raise EvoqError("--stop interval needs --width W, the widest confidence interval of "
                        "an image's mean score to stop at (e.g. 0.25)")
    if not (math.isfinite(width) and width > 0):
        raise EvoqError(f"--width must be a number above 0, got {width}")
    confidence = DEFAULT_CONFIDENCE if confidence is None else confidence
    if not (0 < confidence < 1):
        raise EvoqError(f"--confidence must be in (0, 1), got {confidence}")
    wave = max(2, samples // 4) if wave is None else wave
    if wave < 2:
        raise EvoqError(f"--wave must be at least 2 with --stop interval, got {wave}")
    if 2 * wave >= samples:
        raise EvoqError(f"--stop interval stops at the earliest after two waves (2 x --wave "
                        f"{wave} = {2 * wave} samples), which leaves nothing to save of "
                        f"--samples {samples}; give more --samples or a smaller --wave")
    return ScoreStop(samples, "interval", wave, float(width), float(confidence))


def interval_width(scores: Sequence[float], confidence: float) -> float:
    """The width of the two-sided t interval of the mean of ``scores`` (at least two) at
    ``confidence``: 2 · t((1 + C) / 2, n - 1) · s / √n."""
    from scipy.special import stdtrit  # Student t's inverse CDF (lighter than scipy.stats)

    values = np.asarray(scores, dtype=np.float64)
    n = values.size
    if n < 2:
        raise ValueError("a t interval needs at least two scores")
    return float(2 * stdtrit(n - 1, (1 + confidence) / 2) * values.std(ddof=1) / math.sqrt(n))


def stop_reason(valid: Sequence[float], asked: int, rule: ScoreStop) -> str | None:
    """Why an image stops after ``asked`` samples whose valid scores are ``valid`` (in
    sample order), or None to ask another wave. ``fixed`` runs say "fixed" at K; interval
    runs say "exhausted" at K (as ``vote --stop`` does), before K "interval" once the rule
    holds."""
    if rule.stop == "fixed":
        return "fixed" if asked >= rule.samples else None
    if asked >= rule.samples:
        return "exhausted"
    if len(valid) >= 2 * rule.wave and interval_width(valid, rule.confidence) < rule.width:
        return "interval"
    return None


def replay(scores: Sequence[float | None], rule: ScoreStop) -> tuple[int, str | None]:
    """(samples used, stop reason) of an image whose samples scored ``scores`` (None for an
    invalid answer): the first wave end at which :func:`stop_reason` stops, or
    (``len(scores)``, None) when the samples end before the rule stops. A run's own rows
    replay to their own count; anything else is a broken run."""
    for end in rule.wave_ends():
        if end > len(scores):
            break
        reason = stop_reason([s for s in scores[:end] if s is not None], end, rule)
        if reason is not None:
            return end, reason
    return len(scores), None
