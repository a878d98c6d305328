"""The answer parser: a table of real-looking outputs, and a property test that it never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evoq_data.generation.parse import PARSE_STATUSES, parse_compare, parse_score

COMPARE_CASES = [
    # (raw text, reasoning, expected value, expected status)
    ("<think>The first is sharper.</think> \\boxed{0}", True, 0, "ok"),
    ("<think>noisy first</think>\n\\boxed{1}", True, 1, "ok"),
    ("<think>x</think> boxed{1}", True, 1, "ok"),  # the card's spelling
    ("\\boxed{ 1 }", True, 1, "ok"),
    ("\\boxed{1} so the answer is \\boxed{1}", True, 1, "ok"),  # same answer twice
    ("\\boxed{0} ... no wait \\boxed{1}", True, None, "conflicting_boxes"),
    ("<think>the first one</think> 0", True, None, "no_box"),  # reasoning needs the box
    ("<think>truncated before the answer", True, None, "no_box"),
    ("\\boxed{2}", True, None, "out_of_range"),
    ("\\boxed{0.5}", True, None, "out_of_range"),
    ("\\boxed{first}", True, None, "not_a_number"),
    ("\\boxed{}", True, None, "not_a_number"),
    ("\\boxed{\\text{1}}", True, None, "not_a_number"),  # a box, but not a bare number
    ("", True, None, "empty"),
    ("   \n", False, None, "empty"),
    ("0", False, 0, "ok"),
    (" 1\n", False, 1, "ok"),
    ("1.", False, 1, "ok"),
    ("\\boxed{1}", False, 1, "ok"),
    ("The first image is better: 0", False, None, "no_answer"),
    ("3", False, None, "out_of_range"),
    ("\\boxed{0}\\boxed{1}", False, None, "conflicting_boxes"),
]


@pytest.mark.parametrize(("text", "reasoning", "value", "status"), COMPARE_CASES)
def test_parse_compare_table(text, reasoning, value, status):
    assert parse_compare(text, reasoning) == (value, status)


SCORE_CASES = [
    ("<think>sharp, little noise</think> \\boxed{4.25}", True, 4.25, "ok"),
    ("<think>..</think>\\boxed{1}", True, 1.0, "ok"),
    ("\\boxed{5.00}", True, 5.0, "ok"),
    ("\\boxed{$3.5$}", True, 3.5, "ok"),
    ("\\boxed{5.01}", True, None, "out_of_range"),
    ("\\boxed{0.99}", True, None, "out_of_range"),
    ("\\boxed{-2}", True, None, "out_of_range"),
    ("\\boxed{3.2} \\boxed{3.4}", True, None, "conflicting_boxes"),
    ("\\boxed{good}", True, None, "not_a_number"),
    ("rating: 3.5", True, None, "no_box"),
    ("3.75", False, 3.75, "ok"),
    ("about 3", False, None, "no_answer"),
    ("\\boxed{nan}", True, None, "not_a_number"),
    ("\\boxed{1e400}", True, None, "not_a_number"),
]


@pytest.mark.parametrize(("text", "reasoning", "value", "status"), SCORE_CASES)
def test_parse_score_table(text, reasoning, value, status):
    assert parse_score(text, reasoning) == (value, status)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(), st.from_regex(r"\\?boxed\{[^}]{0,6}\}", fullmatch=False)),
       reasoning=st.booleans())
def test_parsers_never_raise_and_are_consistent(text, reasoning):
    for parser, allowed in ((parse_compare, {0, 1}), (parse_score, None)):
        value, status = parser(text, reasoning)
        assert status in PARSE_STATUSES
        assert (value is None) == (status != "ok")
        if value is not None:
            if allowed is not None:
                assert value in allowed
            else:
                assert 1.0 <= value <= 5.0


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=40),
       answer=st.sampled_from(["0", "1"]))
def test_a_single_box_wins_over_any_reasoning_text(prefix, answer):
    text = f"<think>{prefix}</think> \\boxed{{{answer}}}"
    assert parse_compare(text, True) == (int(answer), "ok")
