"""The generated task suite: determinism, ids and splits, gold answers recomputed from the prompts, graders."""

from __future__ import annotations

import ast
import datetime as dt
import re
from collections import Counter

import pytest

from crescade.common.errors import ConfigError
from crescade.tools.collect import Example, load_examples, save_examples
from crescade.tools.graders import (
    code_tests,
    extract_answer_text,
    extract_int_list,
    get_grader,
    list_match,
    numeric,
    string_casefold,
    string_exact,
)
from crescade.tools.tasks import (
    DEFAULT_SEED,
    FAMILIES,
    SolvedTask,
    default_task_suite,
    generate_solved,
    generate_tasks,
    main,
    split_of,
)

EXPECTED_FAMILIES = {"arith_one_step", "arith_multi_step", "unit_conversion", "date_arithmetic",
                     "string_manipulation", "list_operations", "python_function"}


@pytest.fixture(scope="module")
def solved() -> list[SolvedTask]:
    return generate_solved(40, seed=DEFAULT_SEED)


def _by_family(solved: list[SolvedTask], family: str) -> list[SolvedTask]:
    return [s for s in solved if s.example.task == family]


# --------------------------------------------------------------------------- determinism, ids, splits


def test_families_and_default_suite() -> None:
    assert set(FAMILIES) == EXPECTED_FAMILIES
    suite = default_task_suite()
    assert suite == generate_tasks(n_per_family=40, seed=2026)
    assert Counter(e.task for e in suite) == dict.fromkeys(FAMILIES, 40)
    assert all(isinstance(e, Example) for e in suite)


def test_deterministic_in_seed() -> None:
    a = generate_tasks(10, seed=1)
    assert a == generate_tasks(10, seed=1)
    b = generate_tasks(10, seed=2)
    assert [e.prompt_id for e in a] == [e.prompt_id for e in b]
    assert [e.prompt for e in a] != [e.prompt for e in b]
    for fam in FAMILIES:  # every family actually depends on the seed
        assert [e.prompt for e in a if e.task == fam] != [e.prompt for e in b if e.task == fam]


def test_prefix_and_family_independence() -> None:
    big = generate_tasks(20, seed=5)
    small = generate_tasks(7, seed=5)
    assert small == [e for e in big if int(e.prompt_id[-4:]) < 7]
    only = generate_tasks(20, seed=5, families=["date_arithmetic", "list_operations"])
    assert only == [e for e in big if e.task in ("date_arithmetic", "list_operations")]


def test_ids_unique_and_stable(solved: list[SolvedTask]) -> None:
    ids = [s.example.prompt_id for s in solved]
    assert len(set(ids)) == len(ids)
    for s in solved:
        fam, _, num = s.example.prompt_id.rpartition("-")
        assert fam == s.example.task and re.fullmatch(r"\d{4}", num)
    # prompts differ within a family (the generator redraws repeats)
    for fam in FAMILIES:
        prompts = [s.example.prompt for s in _by_family(solved, fam)]
        assert len(set(prompts)) == len(prompts), fam


def test_split_fraction_and_stability() -> None:
    ex = generate_tasks(200, seed=3)
    frac = sum(e.split == "test" for e in ex) / len(ex)
    assert 0.26 < frac < 0.34
    other = {e.prompt_id: e.split for e in generate_tasks(200, seed=99)}
    assert all(other[e.prompt_id] == e.split == split_of(e.prompt_id) for e in ex)  # id alone decides
    assert {e.split for e in generate_tasks(5, test_fraction=0.0)} == {"train"}
    assert {e.split for e in generate_tasks(5, test_fraction=1.0)} == {"test"}
    wider = {e.prompt_id: e.split for e in generate_tasks(200, seed=3, test_fraction=0.5)}
    assert all(wider[e.prompt_id] == "test" for e in ex if e.split == "test")  # monotone in the fraction


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown task families"):
        generate_tasks(2, families=["arith_one_step", "poetry"])
    with pytest.raises(ConfigError, match="unknown task families"):
        generate_tasks(2, families="arith_one_step")
    with pytest.raises(ConfigError, match="test_fraction"):
        generate_tasks(2, test_fraction=1.5)
    with pytest.raises(ConfigError, match="n_per_family"):
        generate_tasks(-1)
    assert generate_tasks(0) == []


def test_round_trips_through_save_examples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ex = generate_tasks(3, seed=4)
    save_examples(ex, tmp_path / "tasks.jsonl")
    assert load_examples(tmp_path / "tasks.jsonl") == ex


def test_main_writes_suite(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "suite.jsonl"
    assert main([str(out)]) == 0
    assert load_examples(out) == default_task_suite()
    assert "wrote 280 examples" in capsys.readouterr().out
    assert main([str(out), "--n", "3", "--seed", "1", "--family", "list_operations"]) == 0
    assert load_examples(out) == generate_tasks(3, seed=1, families=["list_operations"])


# --------------------------------------------------------------------------- prompts and graders


def test_prompts_end_with_format_instruction(solved: list[SolvedTask]) -> None:
    for s in solved:
        e = s.example
        last = e.prompt.splitlines()[-1]
        if e.task == "python_function":
            assert e.grader == "code_tests"
            name = re.search(r"`(\w+)\(", e.prompt).group(1)  # type: ignore[union-attr]
            assert last == f"Reply with one ```python code block defining `{name}`."
        else:
            assert last.startswith("Work it out step by step, then end your reply with a final line 'Answer: ")
            assert last.endswith("'.")
            assert e.grader in {"numeric", "string_exact", "string_casefold", "list_match"}
            if e.grader == "numeric":
                assert "<number>" in last
            if e.grader == "list_match":
                assert "[<numbers" in last


def test_every_non_code_gold_accepts_solution_and_rejects_wrong(solved: list[SolvedTask]) -> None:
    for s in solved:
        if s.example.grader == "code_tests":
            continue
        grade = get_grader(s.example.grader)
        ref = s.example.reference
        assert grade(s.solution, ref), s
        assert not grade(s.wrong, ref), s
        # the styles small models use: \boxed{}, reasoning before the marker, a bare reply
        assert grade(f"Let me think step by step.\n\\boxed{{{ref}}}", ref)
        assert grade(f"Working it out carefully.\n**Answer:** {ref}", ref)
        assert grade(f"{ref}", ref)


def test_python_function_hidden_tests_run(solved: list[SolvedTask]) -> None:
    """Every code example of the default suite (~35 ms a subprocess): the reference passes, the wrong one fails."""
    code = _by_family(solved, "python_function")
    names = {re.search(r"`(\w+)\(", s.example.prompt).group(1) for s in code}  # type: ignore[union-attr]
    assert len(names) >= 8
    for s in code:
        assert "assert " in s.example.reference
        assert code_tests(s.solution, s.example.reference), s.example.prompt
        assert not code_tests(s.wrong, s.example.reference), s.example.prompt
    assert not code_tests("Sorry, I cannot write code.", code[0].example.reference)


def test_python_function_gold_spot_checks() -> None:
    """Hidden tests hold the values a hand-written solution gives (independent of the generator's own code)."""
    hand = {
        "sum_powers": lambda p: f"def sum_powers(n):\n    t = 0\n    for i in range(n + 1):\n        t += i**{p}\n"
                                f"    return t\n",
        "second_largest": lambda _: "def second_largest(nums):\n    m = max(nums)\n"
                                    "    return max(x for x in nums if x != m)\n",
    }
    checked = 0
    for s in generate_solved(60, seed=11, families=["python_function"]):
        name = re.search(r"`(\w+)\(", s.example.prompt).group(1)  # type: ignore[union-attr]
        if name in hand:
            p = re.search(r"\*\*(\d)", s.example.prompt)
            src = hand[name](p.group(1) if p else "")
            assert code_tests(f"```python\n{src}```", s.example.reference)
            checked += 1
    assert checked >= 2


# --------------------------------------------------------------------------- gold recomputed from the prompt

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]


def _date(text: str) -> dt.date:
    month, day, year = re.fullmatch(r"(\w+) (\d+), (\d{4})", text).groups()  # type: ignore[union-attr]
    return dt.date(int(year), _MONTHS.index(month) + 1, int(day))


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def _recompute(e: Example) -> str:
    q = e.prompt.splitlines()[0]
    if e.task == "arith_one_step":
        a, b = _ints(q)
        if " gets " in q:
            return str(a + b)
        if " gives " in q:
            return str(a - b)
        if " bags " in q:
            return str(a * b)
        assert " shares " in q
        return str(a // b)
    if e.task == "arith_multi_step":
        sentences = re.split(r"(?<=\.) ", q)
        v = _ints(sentences[0])[0]
        for sentence in sentences[1:-1]:
            n = _ints(sentence)
            if "packs" in sentence:
                v += n[0] * n[1]
            elif "buys" in sentence:
                v += n[0]
            elif "half" in sentence:
                v //= 2
            elif "gives" in sentence:
                v -= n[0]
            elif "doubles" in sentence:
                v *= 2
            else:
                assert "triples" in sentence
                v *= 3
        return str(v)
    if e.task == "unit_conversion":
        factor = {("kilometers", "meters"): 1000, ("meters", "centimeters"): 100, ("centimeters", "millimeters"): 10,
                  ("kilograms", "grams"): 1000, ("liters", "milliliters"): 1000, ("hours", "minutes"): 60,
                  ("minutes", "seconds"): 60, ("days", "hours"): 24, ("weeks", "days"): 7,
                  ("hours", "seconds"): 3600, ("feet", "inches"): 12, ("yards", "feet"): 3, ("years", "months"): 12}
        if m := re.fullmatch(r"Convert (\d+) (\w+) to (\w+)\.", q):
            x, small, big = int(m.group(1)), m.group(2), m.group(3)
            assert x % factor[big, small] == 0
            return str(x // factor[big, small])
        m = re.fullmatch(r"How many (\w+) are there in (\d+) (\w+)(?: and (\d+) (\w+))?\?", q)
        assert m, q
        small, x, big = m.group(1), int(m.group(2)), m.group(3)
        extra = int(m.group(4)) if m.group(4) else 0
        return str(x * factor[big, small] + extra)
    if e.task == "date_arithmetic":
        if m := re.fullmatch(r"(.+) is a (\w+)\. What day of the week is it (\d+) days after (.+)\?", q):
            d = _date(m.group(1))
            assert d.strftime("%w") == str((["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                              "Saturday"]).index(m.group(2)))  # the stated weekday is true
            later = d + dt.timedelta(days=int(m.group(3)))
            return ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"][later.weekday()]
        m = re.fullmatch(r"How many days after (.+) is (.+)\?", q)
        assert m, q
        d1, d2 = _date(m.group(1)), _date(m.group(2))
        assert d1.year == d2.year and d2 > d1
        return str((d2 - d1).days)
    if e.task == "string_manipulation":
        quoted = re.findall(r'"([^"]*)"', q)
        if q.startswith("Reverse"):
            return quoted[0][::-1]
        if q.startswith("How many times"):
            return str(quoted[1].count(quoted[0]))
        if "uppercase" in q:
            return quoted[0].upper()
        if m := re.match(r"What is the (\d+)\w\w letter", q):
            return quoted[0][int(m.group(1)) - 1]
        assert q.startswith("How many letters")
        return str(len(quoted[0]))
    if e.task == "list_operations":
        nums = ast.literal_eval(re.search(r"\[[^\]]*\]", q).group(0))  # type: ignore[union-attr]
        if "sum" in q:
            return str(sum(nums))
        if "largest" in q:
            return str(max(nums))
        if "smallest" in q:
            return str(min(nums))
        if "Sort" in q:
            return str(sorted(nums))
        assert "How many numbers" in q
        return str(len(nums))
    raise AssertionError(e.task)


@pytest.mark.parametrize("family", sorted(EXPECTED_FAMILIES - {"python_function"}))
def test_gold_recomputed_from_prompt(family: str) -> None:
    examples = [e for e in generate_tasks(60, seed=7, families=[family])]
    for e in examples:
        assert e.reference == _recompute(e), e.prompt
    assert len({e.prompt.split(" ")[0] for e in examples}) >= 1


def test_families_mix_question_kinds() -> None:
    ex = generate_tasks(60, seed=8)
    strings = " ".join(e.prompt for e in ex if e.task == "string_manipulation")
    for kind in ("Reverse", "How many times", "uppercase", "letter of the word", "How many letters"):
        assert kind in strings
    lists = " ".join(e.prompt for e in ex if e.task == "list_operations")
    for kind in ("sum", "largest", "smallest", "Sort", "How many numbers"):
        assert kind in lists
    dates = [e for e in ex if e.task == "date_arithmetic"]
    assert {e.grader for e in dates} == {"numeric", "string_casefold"}
    steps = [e.prompt.count("Then ") for e in ex if e.task == "arith_multi_step"]
    assert min(steps) == 2 and max(steps) == 4


# --------------------------------------------------------------------------- grader strictness


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Answer: 12", True),
        ("\\boxed{12}", True),
        ("12", True),
        ("The answer is 13. Answer: 12", True),  # the last marker wins
        ("Answer: 12. Wait, the answer is 13", False),  # ... whichever it is
        ("\\boxed{12} Answer: 13", True),  # a box beats any marker
        ("Answer: 13", False),
        ("I am not sure.", False),
    ],
)
def test_numeric_rule(response: str, expected: bool) -> None:
    assert numeric(response, "12") is expected


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("Answer: olleh", "olleh", True),
        ("Answer: \"olleh\".", "olleh", True),
        ("**Answer:** `olleh`", "olleh", True),
        ("Reversing h-e-l-l-o gives:\nAnswer: olleh\n", "olleh", True),
        ("\\boxed{\\text{olleh}}", "olleh", True),
        ("olleh", "olleh", True),
        ("Answer: Olleh", "olleh", False),  # case matters
        ("Answer: olleh is the reversed word", "olleh", False),
        ("Answer: hello\nAnswer: olleh", "olleh", True),  # the last marker wins
        ("The reversed word is olleh.", "olleh", False),  # several words, no marker, no box
        ("first line\nolleh", "olleh", False),
        ("Answer: HELLO WORLD", "HELLO WORLD", True),
        ("Answer: HELLO  WORLD", "HELLO WORLD", True),
        ("Answer: hello world", "HELLO WORLD", False),
    ],
)
def test_string_exact(response: str, reference: str, expected: bool) -> None:
    assert string_exact(response, reference) is expected


def test_string_casefold_and_extract_answer_text() -> None:
    assert string_casefold("Answer: sunday", "Sunday")
    assert string_casefold("The day will be:\n\\boxed{SUNDAY}", "Sunday")
    assert not string_casefold("Answer: Monday", "Sunday")
    assert not string_casefold("", "Sunday")
    assert extract_answer_text("answer = 'e'.") == "e"
    assert extract_answer_text("no marker here\nor here") is None
    assert get_grader("string_exact") is string_exact and get_grader("string_casefold") is string_casefold


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Answer: [1, 2, 3]", True),
        ("Answer: [1,2,3]", True),
        ("\\boxed{[1, 2, 3]}", True),
        ("sorted([3, 1, 2]) is\n[1, 2, 3]", True),  # no marker: the last list literal
        ("From [3, 1, 2] we get\nAnswer: [1, 2, 3]", True),
        ("Answer: [1, 2, 3] (not [3, 2, 1])", False),  # the last literal on the marker line
        ("Answer: [3, 2, 1]", False),
        ("Answer: [1, 2]", False),
        ("Answer: 1, 2, 3", False),
        ("Answer: [1, 2, 'x']", False),
        ("I cannot sort.", False),
    ],
)
def test_list_match(response: str, expected: bool) -> None:
    assert list_match(response, "[1, 2, 3]") is expected


def test_list_match_details() -> None:
    assert extract_int_list("Answer: [-3, 0, 5,]") == [-3, 0, 5]
    assert extract_int_list("Answer: []") == []
    assert get_grader("list_match") is list_match
    with pytest.raises(ConfigError):
        list_match("Answer: [1]", "no list")
