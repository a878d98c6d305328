"""Model answers -> (value, parse_status). Parsers never raise.

Only the value inside ``\\boxed{...}`` counts (the card also writes ``boxed{}`` without the
backslash). In direct mode (no reasoning suffix) a bare answer is accepted too. Everything
else is invalid with a named status; the raw text is always kept by the caller.

Statuses:
    ok                 a valid answer
    empty              nothing but whitespace
    no_box             reasoning mode and no ``\\boxed{}`` (also: truncated before the box)
    no_answer          direct mode and neither a box nor a bare answer
    conflicting_boxes  two or more boxes with different values
    out_of_range       a number, but not an allowed value (compare: not 0/1; score: not in [1, 5])
    not_a_number       the box holds text
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

OK = "ok"
EMPTY = "empty"
NO_BOX = "no_box"
NO_ANSWER = "no_answer"
CONFLICTING = "conflicting_boxes"
OUT_OF_RANGE = "out_of_range"
NOT_A_NUMBER = "not_a_number"
PARSE_STATUSES = (OK, EMPTY, NO_BOX, NO_ANSWER, CONFLICTING, OUT_OF_RANGE, NOT_A_NUMBER)

_BOX = re.compile(r"\\?boxed\{([^{}]*)\}")
_BOX_OPEN = re.compile(r"\\?boxed\{")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
SCORE_MIN, SCORE_MAX = 1.0, 5.0


class Parsed(NamedTuple):
    value: float | int | None
    status: str


def _number(text: str) -> float | None:
    """The float a string spells, tolerating surrounding spaces, ``$`` and a final period."""
    s = text.strip().strip("$").strip()
    s = s.removesuffix(".") if s.count(".") > 1 or s.endswith(".") else s
    if not _NUMBER.fullmatch(s):
        return None
    try:
        value = float(s)
    except ValueError:  # pragma: no cover - the regex admits only floats
        return None
    return value if math.isfinite(value) else None


def _candidates(text: str, reasoning: bool) -> tuple[list[str] | None, str]:
    """The answer strings to judge, or (None, status) when there is none."""
    if not isinstance(text, str) or not text.strip():
        return None, EMPTY
    boxes = _BOX.findall(text)
    if boxes:
        return [b.strip() for b in boxes], OK
    if _BOX_OPEN.search(text):  # a box whose content nests braces: \boxed{\text{1}}
        return None, NOT_A_NUMBER
    if reasoning:
        return None, NO_BOX
    return [text.strip()], OK


def _judge(text: str, reasoning: bool, valid) -> Parsed:
    try:
        cands, status = _candidates(text, reasoning)
        if cands is None:
            return Parsed(None, status)
        numbers = [_number(c) for c in cands]
        if any(n is None for n in numbers):
            if len(cands) == 1 and not reasoning and not _BOX.search(text):
                return Parsed(None, NO_ANSWER)
            return Parsed(None, NOT_A_NUMBER)
        if len(set(numbers)) > 1:
            return Parsed(None, CONFLICTING)
        value = valid(numbers[0])
        return Parsed(value, OK) if value is not None else Parsed(None, OUT_OF_RANGE)
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return Parsed(None, NOT_A_NUMBER)


def parse_compare(text: str, reasoning: bool = True) -> Parsed:
    """Parse a compare answer: 0 (first shown image better) or 1 (second shown better)."""
    return _judge(text, reasoning, lambda x: int(x) if x in (0.0, 1.0) else None)


def parse_score(text: str, reasoning: bool = True) -> Parsed:
    """Parse a score answer: a float in [1, 5]."""
    return _judge(text, reasoning, lambda x: float(x) if SCORE_MIN <= x <= SCORE_MAX else None)
