"""A generated task suite: seeded prompts with exact gold answers, in families of different difficulty.

    examples = generate_tasks(n_per_family=40, seed=2026)   # == default_task_suite()
    save_examples(examples, "tasks.jsonl")                  # crescade.collect

Families (``FAMILIES``), roughly from easy to hard for small models:

* ``string_manipulation`` — reverse a word, count a letter, uppercase a phrase, the n-th letter, word length.
* ``list_operations`` — sum, max, min, length or ascending sort of a short list of integers.
* ``unit_conversion`` — km→m, hours→minutes, minutes→hours, "2 hours 15 minutes" → minutes, ...; integer answers.
* ``arith_one_step`` — one-step word problems (+, −, ×, exact ÷).
* ``arith_multi_step`` — word problems of 2–4 chained steps.
* ``date_arithmetic`` — the weekday N days after a dated weekday; the days between two dates of one year.
* ``python_function`` — write a small function; graded by hidden ``assert`` tests (``code_tests``).

Every prompt ends with its answer-format instruction (``Work it out step by step, then end your reply with a
final line 'Answer: <...>'``, or
for code ``Reply with one ```python code block defining `name`.``). Each :class:`~crescade.collect.Example`
carries ``task`` = its family and the name of its grader (``numeric``, ``string_exact``, ``string_casefold``,
``list_match`` or ``code_tests``; see :mod:`crescade.graders`).

Determinism: item ``i`` of a family depends only on ``(seed, family, i)`` (a ``random.Random`` seeded with a
string, stable across runs and Python versions), so a smaller ``n_per_family`` gives a prefix of a larger one
and families do not affect each other. ``prompt_id`` is ``f"{family}-{i:04d}"``; the split depends only on the
id (see :func:`split_of`). :func:`generate_solved` also returns, per example, a correct and a wrong reply
(for tests and demos).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..common.errors import ConfigError
from .collect import Example, save_examples

__all__ = [
    "DEFAULT_SEED",
    "FAMILIES",
    "SolvedTask",
    "default_task_suite",
    "generate_solved",
    "generate_tasks",
    "split_of",
]

DEFAULT_SEED = 2026

# Asking for the working first matters: told only to "end with Answer:", small models answer at once and
# multi-step problems fail (a recorded run: Qwen2.5-Coder-1.5B 2/20 on arith_multi_step that way).
NUMBER_FORMAT = "Work it out step by step, then end your reply with a final line 'Answer: <number>'."
LIST_FORMAT = ("Work it out step by step, then end your reply with a final line "
               "'Answer: [<numbers separated by commas>]'.")


def _text_format(what: str) -> str:
    return f"Work it out step by step, then end your reply with a final line 'Answer: <{what}>'."


def _code_format(name: str) -> str:
    return f"Reply with one ```python code block defining `{name}`."


@dataclass(frozen=True)
class SolvedTask:
    """A generated example with a reply the grader accepts (``solution``) and one it rejects (``wrong``)."""

    example: Example
    solution: str
    wrong: str


@dataclass(frozen=True)
class _Item:
    prompt: str
    reference: str
    grader: str
    solution: str
    wrong: str


def _answer_item(body: str, fmt: str, gold: object, wrong: object, grader: str) -> _Item:
    if str(gold) == str(wrong):
        raise AssertionError(f"wrong answer equals gold: {gold!r}")  # a generator bug, never user input
    return _Item(f"{body}\n{fmt}", str(gold), grader, f"Answer: {gold}", f"Answer: {wrong}")


def _off_by(rng: random.Random, gold: int) -> int:
    return gold + rng.choice([-3, -2, -1, 1, 2, 3, 10])


_NAMES = ("Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Lena", "Max", "Nora",
          "Omar", "Priya", "Sam", "Tara", "Yusuf", "Zoe", "Leo")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "stamps", "shells", "coins")

# --------------------------------------------------------------------------- arithmetic


def _arith_one_step(rng: random.Random) -> _Item:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    op = rng.choice(("add", "sub", "mul", "div"))
    if op == "add":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        body, gold = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?", a + b
    elif op == "sub":
        a = rng.randint(20, 99)
        b = rng.randint(5, a - 5)
        body = f"{name} has {a} {item} and gives {b} of them to a friend. How many {item} does {name} have left?"
        gold = a - b
    elif op == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        body = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy in total?"
        gold = a * b
    else:
        b, q = rng.randint(2, 9), rng.randint(2, 12)
        body = (f"{name} shares {b * q} {item} equally among {b} friends. "
                f"How many {item} does each friend get?")
        gold = q
    return _answer_item(body, NUMBER_FORMAT, gold, _off_by(rng, gold), "numeric")


def _arith_multi_step(rng: random.Random) -> _Item:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    v = rng.randint(10, 60)
    parts = [f"{name} has {v} {item}."]
    for _ in range(rng.randint(2, 4)):
        ops = ["buy", "packs"]
        if v > 6:
            ops.append("give")
        if v <= 60:
            ops.append("mul")
        if v % 2 == 0 and v >= 4:
            ops.append("half")
        op = rng.choice(ops)
        if op == "buy":
            a = rng.randint(3, 40)
            parts.append(f"Then {name} buys {a} more {item}.")
            v += a
        elif op == "packs":
            a, b = rng.randint(2, 6), rng.randint(2, 10)
            parts.append(f"Then {name} buys {a} packs with {b} {item} in each pack.")
            v += a * b
        elif op == "give":
            a = rng.randint(1, v - 3)
            parts.append(f"Then {name} gives {a} {item} to a friend.")
            v -= a
        elif op == "mul":
            k = rng.choice((2, 3))
            parts.append(f"Then the number of {item} {name} has {'doubles' if k == 2 else 'triples'}.")
            v *= k
        else:
            parts.append(f"Then {name} gives away half of the {item}.")
            v //= 2
    parts.append(f"How many {item} does {name} have now?")
    return _answer_item(" ".join(parts), NUMBER_FORMAT, v, _off_by(rng, v), "numeric")


# --------------------------------------------------------------------------- unit conversion

# (big unit, small unit, small units per big unit)
_UNITS = (
    ("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("centimeters", "millimeters", 10),
    ("kilograms", "grams", 1000), ("liters", "milliliters", 1000), ("hours", "minutes", 60),
    ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7), ("hours", "seconds", 3600),
    ("feet", "inches", 12), ("yards", "feet", 3), ("years", "months", 12),
)


def _unit_conversion(rng: random.Random) -> _Item:
    big, small, f = rng.choice(_UNITS)
    kind = rng.choice(("down", "down", "up", "mixed"))
    if kind == "down":
        x = rng.randint(2, 30)
        body, gold = f"How many {small} are there in {x} {big}?", x * f
        wrong = x * f * 10 if f in (10, 100, 1000) and rng.random() < 0.5 else x * f + rng.choice((-f, f))
    elif kind == "up":
        x = rng.randint(2, 30)
        body, gold = f"Convert {x * f} {small} to {big}.", x
        wrong = x + rng.choice((-1, 1, 2))
    else:
        x, y = rng.randint(1, 9), rng.randint(1, f - 1)
        body, gold = f"How many {small} are there in {x} {big} and {y} {small}?", x * f + y
        wrong = x * f
    return _answer_item(body, NUMBER_FORMAT, gold, wrong, "numeric")


# --------------------------------------------------------------------------- dates

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


def _fmt_date(d: _dt.date) -> str:
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def _random_date(rng: random.Random, year: int) -> _dt.date:
    return _dt.date(year, 1, 1) + _dt.timedelta(days=rng.randrange(365))


def _date_arithmetic(rng: random.Random) -> _Item:
    year = rng.randint(2000, 2030)
    if rng.random() < 0.5:
        d = _random_date(rng, year)
        n = rng.randint(2, 200)
        later = d + _dt.timedelta(days=n)
        body = (f"{_fmt_date(d)} is a {WEEKDAYS[d.weekday()]}. "
                f"What day of the week is it {n} days after {_fmt_date(d)}?")
        day, wrong_day = WEEKDAYS[later.weekday()], WEEKDAYS[(later.weekday() + rng.choice((1, 6))) % 7]
        return _answer_item(body, _text_format("weekday"), day, wrong_day, "string_casefold")
    d1 = _dt.date(year, 1, 1) + _dt.timedelta(days=rng.randrange(364))
    d2 = d1 + _dt.timedelta(days=rng.randint(1, (_dt.date(year, 12, 31) - d1).days))
    gold = (d2 - d1).days
    body = f"How many days after {_fmt_date(d1)} is {_fmt_date(d2)}?"
    return _answer_item(body, NUMBER_FORMAT, gold, gold + rng.choice((-1, 1)), "numeric")


# --------------------------------------------------------------------------- strings

_WORDS = ("apple", "banana", "cherry", "dragon", "elephant", "garden", "harbor", "island", "jungle", "kitchen",
          "lemon", "mountain", "notebook", "orange", "pepper", "question", "rabbit", "summer", "tomato", "umbrella",
          "village", "window", "yellow", "zebra", "balloon", "coffee", "mirror", "letter", "pizza", "bottle",
          "cookie", "puzzle", "butter", "scissors", "mississippi", "strawberry", "committee", "assessment",
          "bookkeeper", "teammate", "planet", "silver", "candle", "forest", "castle", "pencil", "rocket", "guitar")
_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _string_manipulation(rng: random.Random) -> _Item:
    w = rng.choice(_WORDS)
    kind = rng.choice(("reverse", "count", "upper", "nth", "length"))
    if kind == "reverse":
        gold = w[::-1]
        i = rng.randrange(len(w) - 1)
        wrong = gold[:i] + gold[i + 1] + gold[i] + gold[i + 2 :]
        wrong = wrong if wrong != gold else w
        return _answer_item(f'Reverse the letters of the word "{w}".', _text_format("reversed word"), gold, wrong,
                            "string_exact")
    if kind == "count":
        c = rng.choice(sorted(set(w)))
        count = w.count(c)
        return _answer_item(f'How many times does the letter "{c}" appear in the word "{w}"?', NUMBER_FORMAT,
                            count, count + rng.choice((-1, 1)) if count > 1 else count + 1, "numeric")
    if kind == "upper":
        phrase = f"{w} {rng.choice(_WORDS)}"
        gold = phrase.upper()
        return _answer_item(f'Write the phrase "{phrase}" in uppercase letters.', _text_format("uppercase phrase"),
                            gold, phrase, "string_exact")
    if kind == "nth":
        n = rng.randint(1, min(len(w), len(_ORDINALS)))
        gold = w[n - 1]
        wrong = rng.choice([c for c in _LETTERS if c != gold])
        return _answer_item(f'What is the {_ORDINALS[n - 1]} letter of the word "{w}"?', _text_format("letter"),
                            gold, wrong, "string_casefold")
    return _answer_item(f'How many letters does the word "{w}" have?', NUMBER_FORMAT, len(w),
                        len(w) + rng.choice((-1, 1)), "numeric")


# --------------------------------------------------------------------------- lists


def _list_operations(rng: random.Random) -> _Item:
    nums = rng.sample(range(1, 100), rng.randint(4, 8))
    shown = f"Here is a list of numbers: {nums}."
    kind = rng.choice(("sum", "max", "min", "sorted", "length"))
    if kind == "sorted":
        gold = sorted(nums)
        i = rng.randrange(len(gold) - 1)
        wrong = [*gold[:i], gold[i + 1], gold[i], *gold[i + 2 :]]
        return _answer_item(f"{shown} Sort the list in ascending order.", LIST_FORMAT, gold, wrong, "list_match")
    question, value = {
        "sum": ("What is the sum of the numbers in the list?", sum(nums)),
        "max": ("What is the largest number in the list?", max(nums)),
        "min": ("What is the smallest number in the list?", min(nums)),
        "length": ("How many numbers are in the list?", len(nums)),
    }[kind]
    return _answer_item(f"{shown} {question}", NUMBER_FORMAT, value, value + rng.choice((-1, 1)), "numeric")


# --------------------------------------------------------------------------- python functions


@dataclass(frozen=True)
class _CodeSpec:
    name: str
    signature: str
    description: str
    solution: str
    wrong: str
    inputs: list[tuple[Any, ...]]


def _spec_affine(rng: random.Random) -> _CodeSpec:
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    return _CodeSpec(
        "affine", "affine(x)", f"returns {a} * x + {b} for an integer x",
        f"def affine(x):\n    return {a} * x + {b}\n", f"def affine(x):\n    return {a} * (x + {b})\n",
        [(0,), (1,), (-3,), (rng.randint(5, 50),), (rng.randint(-50, -5),)])


def _spec_count_multiples(rng: random.Random) -> _CodeSpec:
    k = rng.randint(2, 7)
    lists = [[k, 2 * k, 3 * k], [1, k + 1], [], [rng.randint(0, 60) for _ in range(8)], [0, -k, 5 * k + 1]]
    return _CodeSpec(
        "count_multiples", "count_multiples(nums)",
        f"returns how many integers in the list nums are divisible by {k}",
        f"def count_multiples(nums):\n    return sum(1 for n in nums if n % {k} == 0)\n",
        f"def count_multiples(nums):\n    return sum(1 for n in nums if n % {k} != 0)\n",
        [(x,) for x in lists])


def _spec_clamp(rng: random.Random) -> _CodeSpec:
    lo = rng.randint(-10, 5)
    hi = lo + rng.randint(5, 30)
    return _CodeSpec(
        "clamp", "clamp(x)", f"returns x limited to the range [{lo}, {hi}]: {lo} if x < {lo}, {hi} if x > {hi}, "
        "else x",
        f"def clamp(x):\n    return max({lo}, min(x, {hi}))\n", f"def clamp(x):\n    return min(x, {hi})\n",
        [(lo - 7,), (lo,), (hi,), (hi + 3,), ((lo + hi) // 2,)])


def _spec_sum_powers(rng: random.Random) -> _CodeSpec:
    p = rng.randint(1, 3)
    return _CodeSpec(
        "sum_powers", "sum_powers(n)", f"returns 1**{p} + 2**{p} + ... + n**{p} (0 when n is 0)",
        f"def sum_powers(n):\n    return sum(i ** {p} for i in range(1, n + 1))\n",
        f"def sum_powers(n):\n    return sum(i ** {p} for i in range(1, n))\n",
        [(0,), (1,), (3,), (rng.randint(5, 20),)])


def _spec_keep_greater(rng: random.Random) -> _CodeSpec:
    t = rng.randint(0, 30)
    lists = [[t, t + 1, t - 1], [rng.randint(-10, 50) for _ in range(7)], [], [t + 5, t, t + 2]]
    return _CodeSpec(
        "keep_greater", "keep_greater(nums)",
        f"returns a new list of the integers in nums that are strictly greater than {t}, in their original order",
        f"def keep_greater(nums):\n    return [n for n in nums if n > {t}]\n",
        f"def keep_greater(nums):\n    return [n for n in nums if n >= {t}]\n",
        [(x,) for x in lists])


def _spec_join_repeat(rng: random.Random) -> _CodeSpec:
    k = rng.randint(2, 5)
    sep = rng.choice(("-", "+", "/", ":"))
    return _CodeSpec(
        "join_repeat", "join_repeat(s)", f"returns the string s repeated {k} times with {sep!r} between copies "
        f"(for example join_repeat('ab') == {sep.join(['ab'] * k)!r})",
        f"def join_repeat(s):\n    return {sep!r}.join([s] * {k})\n",
        f"def join_repeat(s):\n    return ({sep!r} + s) * {k}\n",
        [("ab",), ("x",), ("hello",), ("",)])


def _spec_fizzbuzz(rng: random.Random) -> _CodeSpec:
    a, b = rng.sample((2, 3, 5, 7), 2)
    return _CodeSpec(
        "fizzbuzz_word", "fizzbuzz_word(n)",
        f"returns 'FizzBuzz' if n is divisible by both {a} and {b}, 'Fizz' if only by {a}, 'Buzz' if only by {b}, "
        "and otherwise str(n)",
        f"def fizzbuzz_word(n):\n    if n % {a * b} == 0:\n        return 'FizzBuzz'\n    if n % {a} == 0:\n"
        f"        return 'Fizz'\n    if n % {b} == 0:\n        return 'Buzz'\n    return str(n)\n",
        f"def fizzbuzz_word(n):\n    if n % {a} == 0:\n        return 'Fizz'\n    if n % {b} == 0:\n"
        f"        return 'Buzz'\n    if n % {a * b} == 0:\n        return 'FizzBuzz'\n    return str(n)\n",
        [(a,), (b,), (a * b,), (1,), (a * b * 2,), (a * b + 1,)])


def _spec_count_vowels(rng: random.Random) -> _CodeSpec:
    vowels = "aeiou"
    extra = rng.choice(("", "y"))
    label = "a, e, i, o, u" + (" and y" if extra else "")
    good, bad = vowels + extra, ("aeiouy" if not extra else vowels)
    return _CodeSpec(
        "count_vowels", "count_vowels(s)", f"returns how many characters of the lowercase string s are one of "
        f"{label}",
        f"def count_vowels(s):\n    return sum(1 for c in s if c in {good!r})\n",
        f"def count_vowels(s):\n    return sum(1 for c in s if c in {bad!r})\n",
        [("hello",), ("rhythm",), ("",), ("yellow sky",), (rng.choice(_WORDS),)])


def _spec_second_largest(rng: random.Random) -> _CodeSpec:
    lists = [[1, 2], [5, 5, 3], [rng.randint(0, 9) for _ in range(4)] + [20, 20], [-1, -7, -3], [4, 9, 9, 9, 2]]
    return _CodeSpec(
        "second_largest", "second_largest(nums)",
        "returns the second largest distinct value in the list nums (nums always holds at least two distinct "
        "values; repeated values count once)",
        "def second_largest(nums):\n    return sorted(set(nums))[-2]\n",
        "def second_largest(nums):\n    return sorted(nums)[-2]\n",
        [(x,) for x in lists])


def _spec_shift_letters(rng: random.Random) -> _CodeSpec:
    k = rng.randint(1, 5)
    return _CodeSpec(
        "shift_letters", "shift_letters(s)",
        f"returns s with every lowercase letter a-z shifted {k} places forward in the alphabet, wrapping around "
        "from z to a; other characters stay unchanged",
        f"def shift_letters(s):\n    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c "
        "for c in s)\n",
        f"def shift_letters(s):\n    return ''.join(chr(ord(c) + {k}) if 'a' <= c <= 'z' else c for c in s)\n",
        [("abc",), ("xyz",), ("hello, world!",), ("",), (rng.choice(_WORDS),)])


def _spec_rotate_left(rng: random.Random) -> _CodeSpec:
    k = rng.randint(1, 3)
    return _CodeSpec(
        "rotate_left", "rotate_left(nums)",
        f"returns a new list: nums rotated left by {k} positions (the first {k} items move to the end); "
        f"nums always has more than {k} items",
        f"def rotate_left(nums):\n    return nums[{k}:] + nums[:{k}]\n",
        f"def rotate_left(nums):\n    return nums[-{k}:] + nums[:-{k}]\n",
        [([1, 2, 3, 4, 5],), (list(range(10, 10 + k + 3)),), ([rng.randint(0, 9) for _ in range(k + 2)] + [99],)])


_CODE_SPECS: tuple[Callable[[random.Random], _CodeSpec], ...] = (
    _spec_affine, _spec_count_multiples, _spec_clamp, _spec_sum_powers, _spec_keep_greater, _spec_join_repeat,
    _spec_fizzbuzz, _spec_count_vowels, _spec_second_largest, _spec_shift_letters, _spec_rotate_left,
)


def _hidden_tests(spec: _CodeSpec) -> str:
    namespace: dict[str, Any] = {}
    exec(compile(spec.solution, f"<{spec.name}>", "exec"), namespace)  # our own reference code, not a reply
    fn = namespace[spec.name]
    lines = []
    for args in spec.inputs:
        call = f"{spec.name}({', '.join(repr(a) for a in args)})"
        lines.append(f"assert {call} == {fn(*args)!r}, {call!r}")
    return "\n".join(lines) + "\n"


def _python_function(rng: random.Random) -> _Item:
    spec = rng.choice(_CODE_SPECS)(rng)
    prompt = f"Write a Python function `{spec.signature}` that {spec.description}.\n{_code_format(spec.name)}"
    return _Item(prompt, _hidden_tests(spec), "code_tests", f"```python\n{spec.solution}```",
                 f"```python\n{spec.wrong}```")


# --------------------------------------------------------------------------- suite

_GENERATORS: dict[str, Callable[[random.Random], _Item]] = {
    "arith_one_step": _arith_one_step,
    "arith_multi_step": _arith_multi_step,
    "unit_conversion": _unit_conversion,
    "date_arithmetic": _date_arithmetic,
    "string_manipulation": _string_manipulation,
    "list_operations": _list_operations,
    "python_function": _python_function,
}
FAMILIES: tuple[str, ...] = tuple(_GENERATORS)
"""Every family name, in generation order."""

_MAX_REDRAWS = 50


def split_of(prompt_id: str, test_fraction: float = 0.3) -> str:
    """``"test"`` or ``"train"`` from a hash of ``prompt_id`` alone: the same id always lands in the same split,
    whatever the seed, and raising ``test_fraction`` only moves ids from train to test."""
    h = int.from_bytes(hashlib.sha256(prompt_id.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def generate_solved(
    n_per_family: int = 40,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    test_fraction: float = 0.3,
) -> list[SolvedTask]:
    """As :func:`generate_tasks`, each example paired with a correct and a wrong reply."""
    if isinstance(n_per_family, bool) or not isinstance(n_per_family, int) or n_per_family < 0:
        raise ConfigError(f"n_per_family must be a non-negative integer, got {n_per_family!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1], got {test_fraction!r}")
    chosen = FAMILIES if families is None else tuple(families)
    unknown = [f for f in chosen if f not in _GENERATORS]
    if unknown or isinstance(families, str):
        raise ConfigError(f"unknown task families {unknown or [families]}; known: {', '.join(FAMILIES)}")
    out: list[SolvedTask] = []
    for family in dict.fromkeys(chosen):
        seen: set[str] = set()
        for i in range(n_per_family):
            rng = random.Random(f"crescade-tasks:{seed}:{family}:{i}")
            item = _GENERATORS[family](rng)
            for _ in range(_MAX_REDRAWS):  # avoid repeating a prompt within the family where the space allows
                if item.prompt not in seen:
                    break
                item = _GENERATORS[family](rng)
            seen.add(item.prompt)
            pid = f"{family}-{i:04d}"
            ex = Example(pid, item.prompt, item.reference, task=family, split=split_of(pid, test_fraction),
                         grader=item.grader)
            out.append(SolvedTask(ex, item.solution, item.wrong))
    return out


def generate_tasks(
    n_per_family: int = 40,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    test_fraction: float = 0.3,
) -> list[Example]:
    """``n_per_family`` examples of each family (default: all of :data:`FAMILIES`), deterministic in ``seed``.

    ``prompt_id`` is ``f"{family}-{i:04d}"``, ``task`` the family, ``split`` from :func:`split_of`.
    """
    return [s.example for s in generate_solved(n_per_family, seed=seed, families=families,
                                               test_fraction=test_fraction)]


def default_task_suite() -> list[Example]:
    """The project's suite: 40 examples of every family, seed :data:`DEFAULT_SEED` (2026), 30% test."""
    return generate_tasks(n_per_family=40, seed=DEFAULT_SEED)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m crescade.tasks OUT.jsonl [--n 40] [--seed 2026] [--family F ...] [--test-fraction 0.3]``:
    write a generated suite (by default :func:`default_task_suite`) as JSONL for ``crescade collect``."""
    parser = argparse.ArgumentParser(prog="python -m crescade.tasks", description="Write a generated task suite.")
    parser.add_argument("out", help="output .jsonl path")
    parser.add_argument("--n", type=int, default=40, help="examples per family (default 40)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed (default {DEFAULT_SEED})")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="a family to include (repeatable)")
    parser.add_argument("--test-fraction", type=float, default=0.3, help="share of ids in the test split")
    args = parser.parse_args(argv)
    examples = generate_tasks(args.n, seed=args.seed, families=args.family, test_fraction=args.test_fraction)
    save_examples(examples, args.out)
    n_test = sum(e.split == "test" for e in examples)
    print(f"wrote {len(examples)} examples ({n_test} test) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
