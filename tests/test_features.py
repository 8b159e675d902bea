"""Tests of crescade.engine.features: final answers, arithmetic checks, safe arithmetic, the feature vector."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pytest

from crescade.engine.features import (
    FEATURE_NAMES,
    MAX_TEXT,
    answer_features,
    arithmetic_checks,
    final_answer,
    final_answer_span,
    parse_number,
    safe_arith,
)

FEATURE = {name: i for i, name in enumerate(FEATURE_NAMES)}
MC_QUERY = "Which river is longest?\n(A) Nile\n(B) Amazon\n(C) Danube\n(D) Rhine"


# --------------------------------------------------------------------------- final_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "c:B"),
        (" (C) because", "c:C"),
        ("b", "c:B"),
        ("[D]", "c:D"),
        ("#### 1,200", "n:1200"),
        ("Reasoning...\n#### -3.5", "n:-3.5"),
        ("\\boxed{42}", "n:42"),
        ("So the total is \\boxed{1,000.0} dollars", "n:1000"),
        ("\\boxed{x+1}", "s:x+1"),
        ("The answer is 7.", "n:7"),
        ("Answer: 12", "n:12"),
        ("She pays 3 + 4 = 7 dollars, then 7 * 2 = 14", "n:14"),
    ],
)
def test_final_answer_reads_the_committed_answer(text: str, expected: str) -> None:
    assert final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7\n#### 7", "n:7"),
        ("2 x 5 = 10. Answer: 10", "n:10"),
        ("4 * 2 = 8", "n:8"),
    ],
)
def test_final_answer_short_arithmetic_starting_with_a_small_digit_is_not_a_choice(
    text: str, expected: str
) -> None:
    # A short answer that starts with 1-5 and a space is arithmetic, not an option label; with an
    # explicit "#### N" / "Answer: N" marker the marked number is the answer.
    assert final_answer(text) == expected


def test_final_answer_priority_boxed_over_marker_and_last_number() -> None:
    assert final_answer("Answer: 3. Actually \\boxed{5} and then 9") == "n:5"
    assert final_answer("#### 8\nbut some other number 11") == "n:8"


@pytest.mark.parametrize(
    "text",
    [
        "```python\ndef f(x):\n    return x + 1\n```",
        "def add(a, b):\n    return a + 2",
        "",
        "   \n\t ",
        "I have no idea what this is about.",
    ],
)
def test_final_answer_none_when_nothing_to_read(text: str) -> None:
    assert final_answer(text) is None


@pytest.mark.parametrize(
    ("text", "spanned"),
    [
        ("  \\boxed{42} is it", "42"),
        ("Answer: 3. Actually \\boxed{5} and then 9", "5"),
        ("#### 8\nbut some other number 11", "8"),
        ("So it is 3 + 4 = 7.\nAnswer: 1,200", "1,200"),
        ("\n (C) because", "C"),
        ("She pays 3 + 4 = 7 dollars, then 7 * 2 = 14", "14"),
        ("x" * 500 + " 77 and 78", "78"),
    ],
)
def test_final_answer_span_is_where_the_final_answer_is_written(text: str, spanned: str) -> None:
    span = final_answer_span(text)
    assert span is not None
    assert text[span[0]:span[1]] == spanned


@pytest.mark.parametrize("text", ["```python\ndef f(x):\n    return 1\n```", "", "no number here"])
def test_final_answer_span_absent_when_there_is_no_final_answer(text: str) -> None:
    assert final_answer_span(text) is None and final_answer(text) is None


def test_final_answer_only_reads_the_capped_prefix() -> None:
    # the number sits beyond MAX_TEXT characters: it must not be read
    assert final_answer("x" * (MAX_TEXT + 10) + " 77") is None


def test_parse_number() -> None:
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("7.") == 7.0
    assert parse_number("abc") is None
    assert parse_number("inf") is None
    assert parse_number("nan") is None


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 + 3 = 5", (1, 0)),
        ("2 + 3 = 6", (0, 1)),
        ("He buys 3 x 4 = 12 pens and 10 / 4 = 2.5 kg, so 7 - 2 = 4", (2, 1)),
        ("$1,000 + $2,000 = $3,000", (1, 0)),
        ("1 / 3 = 0.33", (1, 0)),  # rounded to 2 decimals counts as right
        ("x = 5 and y = 7", (0, 0)),  # no arithmetic on the left
        ("no equations at all", (0, 0)),
        ("4 ÷ 2 = 2 and 3 × 3 = 9", (2, 0)),
    ],
)
def test_arithmetic_checks_counts_statements(text: str, expected: tuple[int, int]) -> None:
    assert arithmetic_checks(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<<2*3=6>>", (1, 0)),
        ("<<2*3=7>>", (0, 1)),
        ("He has <<2*3=6>> then <<10-4=5>>.", (1, 1)),
    ],
)
def test_arithmetic_checks_counts_each_annotation_once(text: str, expected: tuple[int, int]) -> None:
    # One GSM8K-style calculator annotation is one statement: it must be counted once.
    assert arithmetic_checks(text) == expected


def test_arithmetic_checks_percent_on_the_right_side() -> None:
    # "3/4 = 75%" is a true statement (0.75 == 75%): it must not be counted as wrong.
    _, bad = arithmetic_checks("3/4 = 75%")
    assert bad == 0


def test_arithmetic_checks_linear_on_long_text() -> None:
    text = "2 + 2 = 4, " * 100_000  # 1.1M characters
    ok, bad = arithmetic_checks(text)
    assert bad == 0
    assert ok > 0


# --------------------------------------------------------------------------- safe_arith


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("2 x 3 + $4.50", 10.5),
        ("1,000 * 2", 2000.0),
        ("10 ÷ 4", 2.5),
        ("3 × (2 + 1)", 9.0),
        ("-4 + 1", -3.0),
        ("50% * 10", 5.0),
    ],
)
def test_safe_arith_evaluates_plain_arithmetic(expr: str, expected: float) -> None:
    assert safe_arith(expr) == pytest.approx(expected)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os') + 1",
        "__import__('os').system('echo pwned') + 1",
        "open('/etc/passwd') * 2",
        "(1).__class__ * 2",
        "a + b",
        "len('abc') + 1",
        "[1, 2] * 3",
        "lambda: 1 + 2",
        "2 ** 10",  # power is not plain arithmetic (and could explode)
        "7",  # no operator
        "",
        "1 / 0",
        "1e308 * 10",  # overflows to inf
        "(" * 60 + "1+1" + ")" * 60,
        "1 + " * 50 + "1",  # longer than the cap
    ],
)
def test_safe_arith_rejects_anything_but_arithmetic(expr: str) -> None:
    assert safe_arith(expr) is None


def test_safe_arith_never_evaluates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("eval/exec/compile-to-code must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    marker = tmp_path / "pwned"
    expr = f"__import__('os').system('touch {marker}') + 1"
    assert safe_arith(expr) is None
    assert arithmetic_checks(f"{expr} = 1") == (0, 0)
    assert safe_arith("6 * 7") == 42.0
    assert not marker.exists()


# --------------------------------------------------------------------------- answer_features


def _check_vector(v: list[float]) -> None:
    assert len(v) == len(FEATURE_NAMES)
    assert all(isinstance(x, float) and math.isfinite(x) for x in v)


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (MC_QUERY, "B"),
        (MC_QUERY, "I'm not sure, maybe (F)?"),
        ("How many? 3 apples and 4 pears", "3 + 4 = 7\n#### 7"),
        ("Write code", "```python\ndef f(:\n```"),
        ("", ""),
        ("q", "\\boxed{-2}"),
    ],
)
def test_answer_features_shape_and_finite(query: str, text: str) -> None:
    _check_vector(answer_features(query, text))


def test_answer_features_carry_the_expected_signals() -> None:
    good = answer_features(MC_QUERY, "B")
    assert good[FEATURE["is_choice"]] == 1.0
    assert good[FEATURE["valid_choice"]] == 1.0
    assert good[FEATURE["choice_expected_but_missing"]] == 0.0
    assert good[FEATURE["hedge"]] == 0.0

    invalid = answer_features(MC_QUERY, "E")  # E is not one of the options
    assert invalid[FEATURE["is_choice"]] == 1.0
    assert invalid[FEATURE["valid_choice"]] == 0.0

    hedge = answer_features(MC_QUERY, "Sorry, I'm not sure which river it is.")
    assert hedge[FEATURE["hedge"]] == 1.0
    assert hedge[FEATURE["choice_expected_but_missing"]] == 1.0

    math_ok = answer_features("Tom has 3 apples and 4 pears.", "Total: 3 + 4 = 7\n#### 7")
    assert math_ok[FEATURE["has_marker"]] == 1.0
    assert math_ok[FEATURE["final_is_int"]] == 1.0
    assert math_ok[FEATURE["any_arith_bad"]] == 0.0
    assert math_ok[FEATURE["question_number_coverage"]] == 1.0
    math_bad = answer_features("Tom has 3 apples and 4 pears.", "Total: 3 + 4 = 8\n#### 8")
    assert math_bad[FEATURE["any_arith_bad"]] == 1.0

    conflict = answer_features("q", "Answer: 3\nAnswer: 4")
    assert conflict[FEATURE["marker_conflict"]] == 1.0

    code_ok = answer_features("write f", "```python\ndef f(x):\n    return x\n```")
    code_bad = answer_features("write f", "```python\ndef f(x:\n    return x\n```")
    assert (code_ok[FEATURE["has_code"]], code_ok[FEATURE["code_parses"]]) == (1.0, 1.0)
    assert (code_bad[FEATURE["has_code"]], code_bad[FEATURE["code_parses"]]) == (1.0, 0.0)

    assert answer_features("q", "x", finish_reason="length")[FEATURE["truncated"]] == 1.0
    assert answer_features("q", "x", finish_reason="stop")[FEATURE["truncated"]] == 0.0
    assert answer_features("q", "")[FEATURE["empty"]] == 1.0
    assert answer_features("q", "same\nsame\nsame\nsame")[FEATURE["repeated_lines"]] == pytest.approx(0.75)


def test_answer_features_on_a_million_characters() -> None:
    # Must return (the text is capped); no timing assertion.
    big_answer = ("Let me think. 12 * 3 = 36, however 36 - 1 = 34.\n" * 21_000)[:1_000_000]
    big_query = "(A) one\n(B) two\n" + "word 123 " * 111_111
    v = answer_features(big_query, big_answer, finish_reason="length")
    _check_vector(v)
    # only the capped prefix is read
    assert v == answer_features(big_query, big_answer[: MAX_TEXT + 100], finish_reason="length")
    _check_vector(answer_features("q", "```py\n" * 200_000))
    _check_vector(answer_features("q", "=" * 1_000_000))
