"""Rewards for EvoQuality's GRPO stage.

:func:`thurstone_fidelity` is the pure formula (docs/method.md, VisualQuality-R1's
fidelity reward). The factories below build the functions TRL calls, following its calling
convention ``reward(prompts, completions, **columns) -> list[float | None]``: dataset columns
arrive as keyword arguments, ``log_metric`` / ``log_extra`` are TRL's logging hooks, and each
factory checks its settings once and keeps a stable ``__name__`` (TRL names the logged reward
after it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.generation.parse import OK, parse_compare, parse_score

from .data import COMPARE  # the ``task`` of a compare row


def _valid(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _mean_var(values: list[float]) -> tuple[float, float]:
    """Mean and unbiased (N-1) variance; the variance of fewer than two values is 0."""
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, var


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def thurstone_fidelity(scores_self: Sequence[float | None], scores_partner: Sequence[float | None],
                       p_star: float, gamma: float = 1e-6, eps: float = 1e-6) -> list[float]:
    """Fidelity reward of every sampled score of the "self" image against one partner.

    For each valid score q_k of self::

        p_k = Phi((q_k - mean(partner)) / sqrt(var(self) + var(partner) + gamma))
        r_k = sqrt(p_star * p_k + eps) + sqrt((1 - p_star) * (1 - p_k) + eps)

    ``p_star`` is the probability that self is better than the partner. Variances are unbiased
    (N-1; 0 when fewer than two valid scores). Entries that are None or NaN (unparseable
    answers) get reward 0 and are left out of the means and variances. When the partner has no
    valid score at all there is nothing to compare with: valid entries get NaN (the trainer
    leaves such a partner out of its average).
    """
    if not 0.0 <= p_star <= 1.0 or math.isnan(p_star):
        raise ValueError(f"p_star must be in [0, 1], got {p_star}")
    valid_self = [float(x) for x in scores_self if _valid(x)]
    valid_partner = [float(x) for x in scores_partner if _valid(x)]
    if not valid_self:
        return [0.0] * len(scores_self)
    if not valid_partner:
        return [float("nan") if _valid(x) else 0.0 for x in scores_self]
    _, var_self = _mean_var(valid_self)
    mean_partner, var_partner = _mean_var(valid_partner)
    scale = math.sqrt(var_self + var_partner + gamma)
    out = []
    for x in scores_self:
        if not _valid(x):
            out.append(0.0)
            continue
        p_k = _phi((float(x) - mean_partner) / scale)
        out.append(math.sqrt(p_star * p_k + eps) + math.sqrt((1.0 - p_star) * (1.0 - p_k) + eps))
    return out


def group_score_spread(scores: Sequence[float | None], groups) -> tuple[float, float] | None:
    """(mean per-group std of the valid scores, fraction of groups whose valid scores are all
    equal), over the groups (lists of row indices) with at least two valid scores; None when
    there is no such group.

    The collapse monitor: when an image's answers are all equal every one of them earns the
    same fidelity reward, its advantages are 0 and the group teaches nothing. The std is the
    population std of the group's valid scores (0 for a constant group).
    """
    stds, constant = [], 0
    for idx in groups:
        vals = [float(scores[i]) for i in idx if _valid(scores[i])]
        if len(vals) < 2:
            continue
        mean = math.fsum(vals) / len(vals)
        stds.append(math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals)))
        constant += max(vals) == min(vals)
    if not stds:
        return None
    return math.fsum(stds) / len(stds), constant / len(stds)


def _text(completion) -> str:
    """A completion's text: TRL passes ``[{"role": "assistant", "content": str}]`` or a str."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def _compare_rows(task, n: int) -> list[bool]:
    """Which rows hold the compare prompt (none without a ``task`` column)."""
    return [False] * n if task is None else [t == COMPARE for t in task]


def fidelity_reward(*, gamma: float = 1e-6, eps: float = 1e-6, reasoning: bool = True,
                    audit_path: str | Path | None = None):
    """The Thurstone fidelity reward as TRL calls it, averaged over every partner in the batch.

    Rows are grouped by (pair_id, image_id): one group is one image's num_generations answers
    for one pair. A group's partners are the other image of its own pair and of every other
    pair of the same image present in the batch; each answer's reward is the mean of
    :func:`thurstone_fidelity` over those partners (partners without any valid score left out;
    0 when none is left). A group whose own partner is missing from the batch means the
    pair-aware sampler was bypassed: that raises instead of training on noise.

    ``audit_path`` (debugging and tests): every call appends one JSON line with the process rank
    and, per pair it saw, the number of answers of each image.

    With compare rows in the batch (a ``task`` column, ``--compare_weight``) the reward is
    None for them (TRL leaves a None out of its weighted sum) and everything above, the
    metrics included, is computed over the score rows only.
    """
    if gamma < 0 or eps < 0:
        raise EvoqError(f"fidelity reward needs gamma >= 0 and eps >= 0, got {gamma}, {eps}")

    def evoq_fidelity(prompts, completions, pair_id, image_id, partner_id, p_star_self,
                      log_metric=None, log_extra=None, task=None, **_):
        compare_row = _compare_rows(task, len(completions))
        rows = [i for i, c in enumerate(compare_row) if not c]
        parsed = [None if compare_row[i] else parse_score(_text(c), reasoning=reasoning)
                  for i, c in enumerate(completions)]
        scores = [p.value if p is not None and p.status == OK else None for p in parsed]
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in rows:
            groups[(pair_id[i], image_id[i])].append(i)
        pairs_of_image: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for pid, img in groups:
            pairs_of_image[img].append((pid, img))

        if audit_path is not None:
            seen: dict[str, dict[str, int]] = defaultdict(dict)
            for (pid, img), idx in groups.items():
                seen[pid][img] = len(idx)
            line = json.dumps({"rank": int(os.environ.get("RANK", "0")), "pid": os.getpid(),
                               "pairs": seen}, sort_keys=True)
            with open(audit_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

        rewards: list[float | None] = [None] * len(completions)
        for i in rows:
            rewards[i] = 0.0
        for (pid, img), idx in groups.items():
            own_partner = partner_id[idx[0]]
            if (pid, own_partner) not in groups:
                raise RuntimeError(
                    f"pair {pid}: image {img} is in this process's batch without its partner "
                    f"{own_partner}; the pair-aware sampler was bypassed (see evoq_train.sampler)")
            per_partner = []
            for qid, _img in pairs_of_image[img]:
                self_idx = groups[(qid, img)]
                partner = partner_id[self_idx[0]]
                partner_idx = groups.get((qid, partner))
                if partner_idx is None:
                    continue
                p_star = float(p_star_self[self_idx[0]])
                # The reward belongs to this group's answers, compared with that partner's.
                per_partner.append(thurstone_fidelity(
                    [scores[i] for i in idx], [scores[j] for j in partner_idx], p_star,
                    gamma=gamma, eps=eps))
            for pos, i in enumerate(idx):
                vals = [r[pos] for r in per_partner if not math.isnan(r[pos])]
                rewards[i] = math.fsum(vals) / len(vals) if vals else 0.0

        valid = [scores[i] for i in rows if scores[i] is not None]
        if log_metric is not None and rows:
            log_metric("parse_failure_rate", 1.0 - len(valid) / len(rows))
            if valid:
                log_metric("score_mean", math.fsum(valid) / len(valid))
            spread = group_score_spread(scores, groups.values())
            if spread is not None:
                log_metric("score_group_std", spread[0])
                log_metric("score_group_constant_frac", spread[1])
        if log_extra is not None:
            log_extra("score", scores)
            log_extra("parse_status", [p.status if p is not None else None for p in parsed])
        return rewards

    return evoq_fidelity


# <think>...</think>, then a \boxed{} (VisualQuality-R1's format reward, answer in a box).
_FORMAT = re.compile(r"\s*<think>.+?</think>.*?\\?boxed\{[^{}]*\}.*", re.DOTALL)


def format_ok(text: str) -> bool:
    """True when the text has ``<think>...</think>`` followed by a ``\\boxed{}`` that holds a
    valid score: an unparseable answer gets no reward at all (docs/method.md: the lowest reward),
    so a well-formed box around text or an out-of-range value earns nothing here either."""
    text = text or ""
    return bool(_FORMAT.fullmatch(text)) and parse_score(text, True).status == OK


def compare_format_ok(text: str) -> bool:
    """:func:`format_ok` for a compare answer: the box holds 0 or 1."""
    text = text or ""
    return bool(_FORMAT.fullmatch(text)) and parse_compare(text, True).status == OK


def format_reward(compare_reasoning: bool = True):
    """1 when the answer is ``<think>...</think>`` then a ``\\boxed{}`` valid score, else 0.

    A compare row (``task`` "compare") needs a valid compare answer (0 or 1) in the box
    instead; when the compare prompt is asked without the reasoning suffix
    (``compare_reasoning`` false) no format is asked of it and its reward is None.
    """

    def evoq_format(prompts, completions, task=None, **_):
        out: list[float | None] = []
        for c, is_compare in zip(completions, _compare_rows(task, len(completions)),
                                 strict=True):
            if not is_compare:
                out.append(1.0 if format_ok(_text(c)) else 0.0)
            elif compare_reasoning:
                out.append(1.0 if compare_format_ok(_text(c)) else 0.0)
            else:
                out.append(None)
        return out

    return evoq_format


def agreement_reward(reasoning: bool = True):
    """The compare rows' reward: the probability the pseudo-label gives the image the answer
    names. On a compare row ``p_star_self`` is P(the first shown image is better), so answer
    0 earns ``p_star_self``, answer 1 earns ``1 - p_star_self``, an unparseable answer 0.
    Score rows get None. ``reasoning``: the compare prompt's suffix setting (how to parse).

    Logs ``compare_valid_rate`` (share of compare answers that parse) and
    ``compare_accuracy`` (share of valid answers naming the image p* favours, over rows with
    p* != 0.5; not logged when there is none).
    """

    def evoq_agreement(prompts, completions, p_star_self, task=None, log_metric=None,
                       log_extra=None, **_):
        compare_row = _compare_rows(task, len(completions))
        rewards: list[float | None] = [None] * len(completions)
        answers: list[int | None] = [None] * len(completions)
        statuses: list[str | None] = [None] * len(completions)
        right = decided = valid = 0
        for i, c in enumerate(completions):
            if not compare_row[i]:
                continue
            parsed = parse_compare(_text(c), reasoning=reasoning)
            statuses[i] = parsed.status
            p_first = float(p_star_self[i])
            if parsed.status != OK:
                rewards[i] = 0.0
                continue
            valid += 1
            answers[i] = parsed.value
            rewards[i] = p_first if parsed.value == 0 else 1.0 - p_first
            if p_first != 0.5:
                decided += 1
                right += (parsed.value == 0) == (p_first > 0.5)
        n = sum(compare_row)
        if log_metric is not None and n:
            log_metric("compare_valid_rate", valid / n)
            if decided:
                log_metric("compare_accuracy", right / decided)
        if log_extra is not None:
            log_extra("compare_answer", answers)
            log_extra("compare_status", statuses)
        return rewards

    return evoq_agreement


def length_penalty(max_chars: int = 2048):
    """``-min(characters / max_chars, 1)``: a shaping term against rambling answers.

    Measured in characters, not tokens: when every answer hits the token cap (a random or
    young model) token counts are all equal while character counts still differ.
    """
    if max_chars < 1:
        raise EvoqError(f"length penalty needs max_chars >= 1, got {max_chars}")

    def evoq_length_penalty(prompts, completions, **_):
        return [-min(len(_text(c)) / max_chars, 1.0) for c in completions]

    return evoq_length_penalty
