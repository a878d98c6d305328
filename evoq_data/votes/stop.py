"""When a pair has had enough votes: the stopping rules of ``evoq-data vote --stop``.

Pure functions of the vote counts, so they are tested on their own and every runner (local,
Ray) stops at the same vote. After ``n`` of the K planned votes, ``a`` valid votes prefer
image A and ``b`` prefer image B (invalid votes count for neither, as in Eq. 1):

* ``fixed`` (the paper): all K votes, always.
* ``decided``: stop once the hard label of Eq. 1 (1 if a > b, 0 if a < b, 0.5 if equal) can
  no longer change whatever the ``r = K - n`` remaining votes say: ``a > b + r`` or
  ``b > a + r``. The label is then the one the full K votes give, by construction.
* ``confident``: also stop once a Beta(1 + a, 1 + b) posterior on the probability that a
  valid vote prefers A puts the majority side beyond C: P(p > 1/2) >= C or P(p < 1/2) >= C
  (Adaptive-Consistency's Beta stopping criterion, Aggarwal et al., EMNLP 2023). This label
  can differ from the full-K one; C sets how often.

The Beta tail is computed exactly: for integer parameters
P(p < 1/2) = P(Binomial(a + b + 1, 1/2) >= a + 1), a ratio of integers compared with C
as a fraction, so no rounding decides a stop.
"""

from __future__ import annotations

from fractions import Fraction
from math import comb

STOPS = ("fixed", "decided", "confident")
MODES = ("sample", "logprob")
STOP_REASONS = ("fixed", "decided", "confident", "exhausted")


def is_decided(a: int, b: int, n: int, k: int) -> bool:
    """Whether Eq. 1's hard label after ``n`` of ``k`` votes (``a`` for A, ``b`` for B) is
    the full-K label whatever the remaining ``k - n`` votes are."""
    r = k - n
    return a > b + r or b > a + r or r == 0


def beta_tails(a: int, b: int) -> tuple[Fraction, Fraction]:
    """(P(p < 1/2), P(p > 1/2)) for p ~ Beta(1 + a, 1 + b), exact."""
    n = a + b + 1
    below = sum(comb(n, j) for j in range(a + 1, n + 1))  # P(Binomial(n, 1/2) >= a + 1)
    total = 2**n
    return Fraction(below, total), Fraction(total - below, total)


def is_confident(a: int, b: int, confidence: float) -> bool:
    """Whether the Beta(1 + a, 1 + b) posterior puts either side beyond ``confidence``."""
    below, above = beta_tails(a, b)
    c = Fraction(confidence)
    return above >= c or below >= c


def stop_reason(a: int, b: int, n: int, k: int, stop: str,
                confidence: float | None = None) -> str | None:
    """Why the pair stops after ``n`` of ``k`` votes, or None to ask for more.

    ``fixed`` runs stop only at K ("fixed"); adaptive runs at K say "exhausted", before K
    "decided" (which wins when both rules fire) or "confident"."""
    if stop == "fixed":
        return "fixed" if n >= k else None
    if n >= k:
        return "exhausted"
    if is_decided(a, b, n, k):
        return "decided"
    if stop == "confident" and is_confident(a, b, confidence):
        return "confident"
    return None



def can_stop(a: int, b: int, asked: int, n: int, k: int, stop: str,
             confidence: float | None = None) -> bool:
    """Whether a pair with ``a`` valid votes for A and ``b`` for B after ``asked`` of ``k``
    votes could stop at ``n`` (>= ``asked``), whatever the ``n - asked`` votes between say
    (invalid votes count for neither). Where it cannot, a check at ``n`` is a barrier that
    buys nothing and the next wave is asked with this one: ``decided`` with K = 32 cannot
    stop before 17 votes, so a pair's first 24 votes come in one request (waves of 8); a
    ``confident`` pair at 4-4 after 8 votes cannot reach C = 0.99 before 18 (14-4)."""
    if n >= k:
        return True
    # Both rules only get easier as votes move to one side (a larger |a - b| for decided, a
    # larger Beta tail on the side that gains for confident), so if any split of the m votes
    # between stops the pair, one of the two one-sided splits does.
    m = n - asked
    return any(stop_reason(a2, b2, n, k, stop, confidence) is not None
               for a2, b2 in ((a + m, b), (a, b + m)))
