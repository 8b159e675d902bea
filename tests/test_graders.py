"""Graders: exact match, option letters, numbers and code run against hidden tests in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from crescade.common.errors import ConfigError
from crescade.tools.graders import (
    GRADERS,
    choice_letter,
    code_tests,
    exact_match,
    extract_choice,
    extract_code,
    extract_number,
    get_grader,
    numeric,
    run_code_tests,
)

# --------------------------------------------------------------------------- exact_match


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("Paris", "paris", True),
        ("  New\n York \t City ", "new york city", True),
        ("Paris.", "Paris", False),  # punctuation is not normalised
        ("Paris, France", "Paris", False),
        ("", "", True),
        ("STRASSE", "straße", True),  # casefold
    ],
)
def test_exact_match(response: str, reference: str, expected: bool) -> None:
    assert exact_match(response, reference) is expected


# --------------------------------------------------------------------------- choice_letter


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B. Paris", "B"),
        ("B: because rivers flow", "B"),
        ("Answer: B", "B"),
        ("answer: (c)", "C"),
        ("The answer is D.", "D"),
        ("Let me think. Option A is wrong, so the correct option is E.", "E"),
        ("The answer is not A; Answer: C", "C"),  # the last marker wins
        (r"Reasoning... \boxed{C}", "C"),
        (r"\boxed{\text{B}}", "B"),
        (r"Answer: A, but to be precise \boxed{D}", "D"),  # \boxed{} beats a marker
        ("I pick (D) over (A)", "D"),  # the first label
        ("b", "B"),  # a one-letter response
        ("A good question. The answer is B", "B"),  # the article "A" is not a label
        ("The answer is a bit unclear", None),  # a bare lowercase letter after a marker is not a label
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, label: str | None) -> None:
    assert extract_choice(text) == label


def test_choice_letter_grades_against_any_reference_form() -> None:
    assert choice_letter("(B) Paris", "B")
    assert choice_letter("Answer: B", "(b)")
    assert not choice_letter("Answer: C", "B")
    assert not choice_letter("no idea", "B")
    with pytest.raises(ConfigError, match="not an option label"):
        choice_letter("A", "Paris")


# --------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is 12, not 13", 12.0),  # an explicit answer marker beats the last number
        ("It is 12, not 13", 13.0),  # without a marker, the last number
        (r"So \boxed{42}. Then I add 7 to check: 49", 42.0),  # \boxed{} beats a later number
        (r"\boxed{1,234} and Answer: 5", 1234.0),  # \boxed{} beats a marker
        ("Answer: $1,234.", 1234.0),
        ("She pays $3.50 in total.", 3.5),
        ("#### 72", 72.0),
        ("step 1: 3 + 4 = 7\n#### 7\nextra 99", 7.0),  # the marker beats the last number
        ("Answer: 5\n... wait, Answer: 6", 6.0),  # the last marker
        ("x = -5", -5.0),
        ("\u22124 degrees", -4.0),
        ("- 5 apples\n- 6 pears", 6.0),  # a bullet dash is not a minus sign
        ("10-3=7", 7.0),
        ("1,2,3", 3.0),  # commas only group thousands in threes
        ("H2O boils at 100.", 100.0),
        (r"\boxed{\frac{3}{4}}", 0.75),
        (r"\boxed{12 \text{ apples}}", 12.0),
        ("no digits here", None),
    ],
)
def test_extract_number(text: str, value: float | None) -> None:
    assert extract_number(text) == value


def test_numeric_grades_with_tolerance_and_gsm8k_references() -> None:
    assert numeric("The answer is 12, not 13", "12")
    assert not numeric("It is 12, not 13", "12")
    assert numeric("Janet makes $18 every day.", "Janet sells 16 - 3 - 4 = 9 eggs... #### 18")
    assert numeric("Answer: 0.3333333", "0.3333333333", rel_tol=1e-6)
    assert not numeric("Answer: 0.33", "0.3333333333")
    assert numeric("Answer: 0.33", "0.3333333333", abs_tol=0.01)
    assert not numeric("I don't know", "5")
    with pytest.raises(ConfigError, match="holds no number"):
        numeric("5", "five")


# --------------------------------------------------------------------------- code_tests

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_extract_code() -> None:
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n```python\nprint(1)\n```"
    assert extract_code(fenced) == "def add(a, b):\n    return a + b\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```py\nx = 2\n```") == "x = 2\n"
    assert extract_code("def f(): pass") == "def f(): pass"


def test_code_tests_pass_and_fail() -> None:
    good = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."
    assert code_tests(good, TESTS)
    assert code_tests("def add(a, b):\n    return a + b", TESTS)  # no fence: the whole text
    assert not code_tests("```python\ndef add(a, b):\n    return a - b\n```", TESTS)
    assert not code_tests("```python\ndef add(a, b) return\n```", TESTS)  # syntax error
    assert not code_tests("I cannot write code.", TESTS)


def test_code_tests_exit_zero_does_not_pass() -> None:
    assert not code_tests("import sys\nsys.exit(0)", TESTS)
    assert not code_tests("def add(a, b):\n    return 0\nexit(0)", TESTS)


def test_main_block_of_the_solution_does_not_run() -> None:
    code = "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    input()\n"
    assert code_tests(code, TESTS)


def test_infinite_loop_times_out() -> None:
    t0 = time.monotonic()
    passed, detail = run_code_tests("while True:\n    pass", "", timeout=1.0)
    assert not passed and detail == "timeout"
    assert time.monotonic() - t0 < 4
    assert not code_tests("def add(a, b):\n    while True:\n        pass", TESTS, timeout=1.0)


@pytest.mark.parametrize(
    "code",
    [
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import _socket\n_socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')",
    ],
)
def test_network_access_fails(code: str) -> None:
    passed, detail = run_code_tests(code, "")
    assert not passed
    assert "network access is disabled" in detail


def test_memory_is_limited() -> None:
    passed, detail = run_code_tests("x = bytearray(2 * 1024 ** 3)", "")
    assert not passed and "MemoryError" in detail


def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    code = "import os\nassert 'OPENAI_API_KEY' not in os.environ\nassert os.getcwd() != " + repr(
        __import__("os").getcwd()
    )
    assert code_tests(code, "")


def test_children_of_a_timed_out_solution_are_killed() -> None:
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(61)'])\n"
        "while True:\n    pass\n"
    )
    passed, detail = run_code_tests(code, "", timeout=1.0)
    assert not passed and detail == "timeout"
    if sys.platform.startswith("linux"):
        # the grandchild was in the killed process group: it dies (SIGKILL is delivered asynchronously)
        deadline = time.monotonic() + 5
        while _live_sleepers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _live_sleepers()


def _live_sleepers() -> list[int]:
    out = []
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.endswith(b"time.sleep(61)\x00") and not _is_zombie(pid):
            out.append(pid)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        run_code_tests("pass", "", timeout=0)


# --------------------------------------------------------------------------- registry


def test_get_grader() -> None:
    assert get_grader("numeric") is numeric
    assert set(GRADERS) == {
        "exact_match", "choice_letter", "numeric", "code_tests", "string_exact", "string_casefold", "list_match"
    }

    def custom(response: str, reference: str) -> bool:
        return reference in response

    assert get_grader(custom) is custom
    assert get_grader("contains", {"contains": custom}) is custom
    with pytest.raises(ConfigError, match="unknown grader 'nope'; known graders: choice_letter"):
        get_grader("nope")


def test_local_socketpair_and_asyncio_still_work() -> None:
    code = "import asyncio, socket\na, b = socket.socketpair()\nasyncio.run(asyncio.sleep(0))\n"
    assert run_code_tests(code, "") == (True, "")


def _netns_available() -> bool:
    probe = "import ctypes, sys\nsys.exit(ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x40000000) != 0)"
    return sys.platform.startswith("linux") and subprocess.run([sys.executable, "-I", "-c", probe]).returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="no unprivileged network namespaces here")
def test_network_namespace_blocks_even_a_bypassed_guard() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        raw = "import socket\nraw = socket.socket.__mro__[1].__mro__[1]()\n"  # the original _socket.socket
        passed, detail = run_code_tests(raw + f"raw.connect(('127.0.0.1', {port}))", "")
    assert not passed and "OSError" in detail
