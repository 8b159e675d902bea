"""Graders: ``grader(response_text, reference) -> bool``, strict and documented.

* :func:`exact_match` — equal after collapsing whitespace and case.
* :func:`choice_letter` — the option label (A–E) the response commits to equals the reference's.
* :func:`numeric` — the number the response commits to equals the reference's, within a tolerance.
* :func:`code_tests` — the response's Python code passes the reference test code in a subprocess.
* :func:`string_exact` — the answer text the response commits to equals the reference, case-sensitively.
* :func:`string_casefold` — the same, ignoring case.
* :func:`list_match` — the integer list the response commits to equals the reference list.

:func:`get_grader` looks a grader up by name; any callable with the same signature is a grader too.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping

from ..common.errors import ConfigError

__all__ = [
    "GRADERS",
    "Grader",
    "choice_letter",
    "code_tests",
    "exact_match",
    "extract_answer_text",
    "extract_choice",
    "extract_code",
    "extract_int_list",
    "extract_number",
    "get_grader",
    "list_match",
    "numeric",
    "run_code_tests",
    "string_casefold",
    "string_exact",
]

Grader = Callable[[str, str], bool]
"""``grader(response_text, reference) -> bool``."""

# --------------------------------------------------------------------------- exact match


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(response: str, reference: str) -> bool:
    """True when both texts are equal after collapsing whitespace runs and ignoring case."""
    return _norm(response) == _norm(reference)


# --------------------------------------------------------------------------- choice letter

_BOXED_CHOICE = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\}")
# "answer is B", "Answer: (c)", "the correct option is E." — keywords are case-insensitive; a bare lowercase
# letter is not accepted after them ("the answer is a bit..."), a parenthesised one is.
_MARKED_CHOICE = re.compile(
    r"(?i:\b(?:answer|correct\s+(?:option|choice))\b(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=]?\s*"
    r"(?:(?:option|choice)\s+)?)"
    r"(?:\(([A-Ea-e])\)|\[([A-Ea-e])\]|([A-E])(?![\w'’-]))"
)
# The response opens with a label: "B", "(B)", "B)", "B.", "B:", "B - Paris"; not the article "A good ...".
_LEADING_CHOICE = re.compile(r"^\s*[\(\[]?([A-E])(?:[\)\]\.:]|\s+(?![a-z])|$)")
# A label anywhere: "(B)" or "B)" not glued to a preceding word.
_LABEL_CHOICE = re.compile(r"(?<![\w(])\(([A-E])\)|(?<![\w(])([A-E])\)")


def extract_choice(text: str) -> str | None:
    """The option label (``"A"``–``"E"``) a response commits to, or ``None``.

    Rule, first that applies: the last ``\\boxed{X}``; the last ``answer is X`` / ``Answer: X`` /
    ``answer: (x)`` / ``correct option is X`` marker; a label opening the response (``B``, ``(B)``,
    ``B)``, ``B.``, ``B:``); the first ``(X)`` or ``X)`` label anywhere; a response that is one lowercase
    letter. Otherwise a lowercase letter only counts when boxed or parenthesised.
    """
    boxed = _BOXED_CHOICE.findall(text)
    if boxed:
        return str(boxed[-1]).upper()
    marked = _MARKED_CHOICE.findall(text)
    if marked:
        return str(next(g for g in marked[-1] if g)).upper()
    m = _LEADING_CHOICE.match(text)
    if m:
        return m.group(1)
    m = _LABEL_CHOICE.search(text)
    if m:
        return str(next(g for g in m.groups() if g))
    bare = text.strip().strip("()[].:").strip()
    return bare.upper() if len(bare) == 1 and bare in "abcde" else None


def _reference_choice(reference: str) -> str:
    ref = reference.strip().strip("()[]. ").upper()
    if len(ref) == 1 and ref in "ABCDE":
        return ref
    got = extract_choice(reference)
    if got is None:
        raise ConfigError(f"choice_letter: reference {reference[:40]!r} is not an option label A–E")
    return got


def choice_letter(response: str, reference: str) -> bool:
    """True when the label :func:`extract_choice` reads from the response is the reference label."""
    return extract_choice(response) == _reference_choice(reference)


# --------------------------------------------------------------------------- numeric

# A number: an optional sign (not glued to a preceding word, so "10-3" reads 10 and 3; "- 5" is a bullet, not
# -5), an optional "$", digits not glued to a preceding letter or digit ("H2O", "v1.2" hold none), comma
# thousands separators only in groups of three, optional decimals.
_NUMBER = r"(?:(?<![\w.)])-)?(?:\$\s?)?(?<![A-Za-z_\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_MARKED_NUMBER = re.compile(r"(?:####|(?i:\banswer\b)(?:\s+is)?\s*[:=]?)\s*(" + _NUMBER + ")")
_FRAC = re.compile(r"\\d?frac\{\s*(-?\d+(?:\.\d+)?)\s*\}\{\s*(-?\d+(?:\.\d+)?)\s*\}")


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, nested braces matched."""
    out: list[str] = []
    start = 0
    while (i := text.find("\\boxed{", start)) >= 0:
        j, depth = i + len("\\boxed{"), 1
        k = j
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        if depth == 0:
            out.append(text[j : k - 1])
        start = k
    return out


def _to_number(token: str) -> float | None:
    s = token.replace("$", "").replace(",", "").replace(" ", "")
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _number_in(text: str) -> float | None:
    frac = _FRAC.search(text)
    if frac:
        num, den = float(frac.group(1)), float(frac.group(2))
        return num / den if den else None
    m = _NUMBER_RE.search(text)
    return _to_number(m.group(0)) if m else None


def extract_number(text: str) -> float | None:
    """The number a response commits to, or ``None``.

    Rule, first that applies: the first number inside the last ``\\boxed{...}`` (``\\frac{a}{b}`` is a/b);
    the number after the last ``Answer: N`` / ``answer is N`` / ``#### N`` marker; the last number in the
    text. ``1,234`` is 1234 (commas only in groups of three), ``$`` is ignored, a trailing ``.`` ends the
    number, ``−`` is a minus sign. "The answer is 12, not 13" is 12; "It is 12, not 13" is 13.
    """
    t = text.replace("\u2212", "-")
    for content in reversed(_boxed_contents(t)):
        v = _number_in(content)
        if v is not None:
            return v
    marked = _MARKED_NUMBER.findall(t)
    if marked:
        v = _to_number(marked[-1])
        if v is not None:
            return v
    nums = _NUMBER_RE.findall(t)
    return _to_number(nums[-1]) if nums else None


def numeric(response: str, reference: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    """True when :func:`extract_number` of the response equals that of the reference within tolerance.

    The reference goes through the same rule, so GSM8K-style ``"... #### 72"`` references work.
    """
    ref = extract_number(reference)
    if ref is None:
        raise ConfigError(f"numeric: reference {reference[:40]!r} holds no number")
    got = extract_number(response)
    return got is not None and math.isclose(got, ref, rel_tol=rel_tol, abs_tol=abs_tol)


# --------------------------------------------------------------------------- answer text and lists

_ANSWER_LINE = re.compile(r"(?i:\banswer\b)(?:\s+is)?\s*[:=]\s*([^\n]*)")
_TEXT_WRAP = re.compile(r"^\\text\{(.*)\}$", re.S)
_QUOTES = "\"'`“”‘’"
_INT_LIST = re.compile(r"\[\s*(?:-?\d+\s*(?:,\s*-?\d+\s*)*,?\s*)?\]")


def _clean_answer(text: str) -> str:
    t = " ".join(text.split())
    m = _TEXT_WRAP.match(t)
    if m:
        t = m.group(1).strip()
    prev = None
    while prev != t:  # peel wrappers in any order: **"olleh".** -> olleh
        prev = t
        t = t.strip().strip("*").strip()
        if t.endswith(".") and len(t) > 1:
            t = t[:-1]
        if len(t) >= 2 and t[0] in _QUOTES and t[-1] in _QUOTES:
            t = t[1:-1]
    return t


def extract_answer_text(text: str) -> str | None:
    """The answer text a response commits to, or ``None``.

    Rule, first that applies: the contents of the last ``\\boxed{...}`` (a ``\\text{...}`` wrapper removed);
    the rest of the line after the last ``Answer:`` / ``answer is:`` / ``Answer =`` marker (a colon or ``=``
    is required); the whole response when it is a single non-empty line. The text is then cleaned: whitespace
    runs collapsed, then surrounding quotes, backticks, ``*`` and a trailing ``.`` peeled off repeatedly.
    """
    boxed = _boxed_contents(text)
    if boxed:
        return _clean_answer(boxed[-1])
    marked = _ANSWER_LINE.findall(text)
    if marked:
        return _clean_answer(marked[-1])
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return _clean_answer(lines[0]) if len(lines) == 1 else None


def string_exact(response: str, reference: str) -> bool:
    """True when :func:`extract_answer_text` of the response equals the reference (cleaned the same way),
    case-sensitively: ``Answer: olleh`` matches ``olleh``; ``Answer: Olleh`` does not."""
    got = extract_answer_text(response)
    return got is not None and got == _clean_answer(reference)


def string_casefold(response: str, reference: str) -> bool:
    """As :func:`string_exact`, ignoring case (``Answer: sunday`` matches ``Sunday``)."""
    got = extract_answer_text(response)
    return got is not None and got.casefold() == _clean_answer(reference).casefold()


def _parse_int_list(text: str) -> list[int] | None:
    found = _INT_LIST.findall(text.replace("\u2212", "-"))
    if not found:
        return None
    inner = found[-1].strip()[1:-1]
    return [int(x) for x in inner.replace(" ", "").split(",") if x]


def extract_int_list(text: str) -> list[int] | None:
    """The list of integers a response commits to, or ``None``.

    Rule: the last ``[a, b, ...]`` literal of integers inside the last ``\\boxed{...}``; else in the text after
    the last ``Answer:`` marker (to the end of that line); else the last such literal anywhere in the text.
    Spaces are free and one trailing comma is allowed; anything but integers inside the brackets is no list.
    """
    boxed = _boxed_contents(text)
    if boxed:
        return _parse_int_list(boxed[-1])
    marked = _ANSWER_LINE.findall(text)
    if marked:
        return _parse_int_list(marked[-1])
    return _parse_int_list(text)


def list_match(response: str, reference: str) -> bool:
    """True when :func:`extract_int_list` of the response equals that of the reference, in order."""
    ref = extract_int_list(reference)
    if ref is None:
        raise ConfigError(f"list_match: reference {reference[:40]!r} holds no integer list")
    return extract_int_list(response) == ref


# --------------------------------------------------------------------------- code tests

_PY_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.S | re.I)
_ANY_FENCE = re.compile(r"```[ \t]*\r?\n(.*?)```", re.S)
_MEMORY_BYTES = 512 * 1024 * 1024
_FILE_BYTES = 1024 * 1024

# Runs in the child before any untrusted code: its own empty network namespace (Linux, when permitted),
# resource limits, no sockets, then solution and tests in one module namespace. SystemExit from either
# (even exit(0)) is a failure; only reaching the end passes.
_DRIVER = """\
import sys
if sys.platform.startswith("linux"):  # an empty network namespace where the kernel allows one
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET
    except Exception:
        pass
try:
    import resource
    for _k, _v in ((resource.RLIMIT_CPU, {cpu}), (resource.RLIMIT_AS, {mem}),
                   (resource.RLIMIT_FSIZE, {fsize}), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(_k, (_v, _v))
        except (ValueError, OSError):
            pass
except ImportError:
    pass
import socket, _socket
def _no_network(*a, **k):
    raise OSError("network access is disabled while grading")
class _Socket(socket.socket):  # wrapping an existing descriptor (socketpair, accept) still works
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None:
            _no_network()
        super().__init__(family, type, proto, fileno)
_raw = _socket.socket
class _RawSocket(_raw):  # socket.py calls _socket.socket.__init__ on its own instances: no super() here
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if fileno is None:
            _no_network()
        _raw.__init__(self, family, type, proto, fileno)
socket.socket = socket.SocketType = _Socket
_socket.socket = _socket.SocketType = _RawSocket
for _m in (socket, _socket):
    for _n in ("create_connection", "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
               "gethostbyaddr"):
        if hasattr(_m, _n):
            setattr(_m, _n, _no_network)
import types
_mod = types.ModuleType("solution")
sys.modules["solution"] = _mod
try:
    exec(compile({code!r}, "<solution>", "exec"), _mod.__dict__)
    exec(compile({tests!r}, "<tests>", "exec"), _mod.__dict__)
except SystemExit:
    sys.stderr.write("SystemExit during grading\\n")
    sys.stderr.flush()
    import os
    os._exit(3)
"""


def extract_code(text: str) -> str:
    """The first fenced ```python (or ```py) block; else the first untagged ``` block; else the whole text."""
    m = _PY_FENCE.search(text) or _ANY_FENCE.search(text)
    return m.group(1) if m else text


def _minimal_env() -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
    if sys.platform == "win32" and "SYSTEMROOT" in os.environ:  # Python cannot start without it there
        env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]
    return env


def run_code_tests(code: str, tests: str, *, timeout: float = 5.0) -> tuple[bool, str]:
    """Run ``code`` then ``tests`` with ``python -I -c`` in a fresh temp dir; ``(passed, detail)``.

    The child gets a minimal environment (no proxies, no credentials), an empty network namespace where
    Linux permits one, no new sockets or name lookups (``socketpair``, so asyncio, still works), and
    CPU-time (``ceil(timeout) + 1`` s), address-space (512 MB) and file-size (1 MB) limits. The child sets
    these itself before the solution runs (a ``preexec_fn`` is not safe with the threads collection uses).
    It runs in its own session; on timeout the whole process group is killed. ``passed`` is exit code 0;
    ``detail`` is the tail of stderr, or ``"timeout"``. This guards against accidents; it is not a
    security sandbox.
    """
    if timeout <= 0:
        raise ConfigError(f"timeout must be > 0, got {timeout}")
    program = _DRIVER.format(
        cpu=math.ceil(timeout) + 1, mem=_MEMORY_BYTES, fsize=_FILE_BYTES, code=code, tests=tests
    )
    with tempfile.TemporaryDirectory(prefix="crescade-grade-") as tmp, \
            open(os.path.join(tmp, "stderr"), "w+b") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", program],
            cwd=tmp, env=_minimal_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return False, "timeout"
        finally:
            if proc.poll() is None:  # interrupted while waiting: never leave the child behind
                _kill_group(proc)
        _kill_group(proc)  # anything the solution left running in its group
        err.seek(0)
        detail = err.read()[-2000:].decode("utf-8", "replace").strip()
    return rc == 0, detail if rc != 0 else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass
    proc.wait()


def code_tests(response: str, reference: str, *, timeout: float = 5.0) -> bool:
    """True when the response's code (see :func:`extract_code`) passes the test code ``reference``.

    Runs :func:`run_code_tests`; False on any failure, exception, ``exit()`` or timeout.
    """
    return run_code_tests(extract_code(response), reference, timeout=timeout)[0]


# --------------------------------------------------------------------------- registry

GRADERS: Mapping[str, Grader] = {
    "exact_match": exact_match,
    "choice_letter": choice_letter,
    "numeric": numeric,
    "code_tests": code_tests,
    "string_exact": string_exact,
    "string_casefold": string_casefold,
    "list_match": list_match,
}


def get_grader(grader: str | Grader, extra: Mapping[str, Grader] | None = None) -> Grader:
    """The grader named ``grader`` (looked up in ``extra`` first, then :data:`GRADERS`), or ``grader`` itself
    when it is callable. An unknown name is a :class:`~crescade.errors.ConfigError` listing the known ones."""
    if callable(grader):
        return grader
    if isinstance(grader, str):
        if extra is not None and grader in extra:
            return extra[grader]
        if grader in GRADERS:
            return GRADERS[grader]
    known = ", ".join(sorted({*GRADERS, *(extra or {})}))
    raise ConfigError(f"unknown grader {grader!r}; known graders: {known}")
