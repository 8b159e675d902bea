"""Answer features the quality estimator reads: format, final answer, arithmetic, code, hedging.

Everything here is model-agnostic and works on text alone, in time linear in the text length
(long answers are capped), so a model the estimator never saw is judged on the same footing.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

MAX_TEXT = 6000  # characters of an answer that are read; the rest is ignored

_CHOICE = re.compile(r"^\s*[\(\[]?([A-Ea-e]|[1-5])(?:[\)\]\.:]|\s+(?![a-z])|$)(?!\s*[-+*/x×=]\s*\d)")
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]{0,80})\}")
_MARKED = re.compile(r"(?:####|[Aa]nswer\s*(?:is|:)|ANSWER\s*:?)\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
_CODE_FENCE = re.compile(r"```[a-zA-Z0-9_+-]*[ \t]*\n(.*?)```", re.S)
_OPTION = re.compile(r"^\s*\(?([A-E])[\)\.]", re.M)
_HEDGE = re.compile(
    r"\b(not sure|cannot|can't|unable to|sorry|as an ai|i don't know|unclear|ambiguous|i think)\b", re.I
)
_SELF_CORRECT = re.compile(r"\b(however|actually|wait|assum\w*|approximately|mistake|re-?evaluat\w*)\b", re.I)
_CALC = re.compile(r"<<([^<>=]{1,80})=([^<>]{1,40})>>")
_EXPR_CHARS = frozenset("0123456789.,+-*/x×÷()$% \t")
_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}

#: Names of the columns :func:`answer_features` returns, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "empty", "log_chars", "log_words", "is_choice", "valid_choice", "choice_expected_but_missing",
    "has_final", "has_boxed", "has_marker", "marker_conflict", "final_is_int", "final_negative",
    "final_in_question", "question_number_coverage", "log_arith_ok", "log_arith_bad", "any_arith_bad",
    "has_code", "code_parses", "hedge", "log_self_correct", "repeated_lines", "truncated",
)


def parse_number(s: str) -> float | None:
    """Parse ``1,234.5`` style numbers; ``None`` if it is not a finite number."""
    try:
        v = float(s.replace(",", "").rstrip("."))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _fmt(v: float) -> str:
    return str(int(v)) if abs(v - round(v)) < 1e-9 and abs(v) < 1e15 else f"{v:.6g}"


def final_answer(text: str) -> str | None:
    """The answer a response commits to, normalised for comparison across models.

    ``c:X`` for a choice label, ``n:V`` for a number; ``None`` when none can be read (e.g. code).
    Priority: ``\\boxed{}``, a short choice label, ``#### N`` / ``Answer: N``, the last number.
    """
    found = _final(text)
    return found[0] if found is not None else None


def final_answer_span(text: str) -> tuple[int, int] | None:
    """Where in ``text`` the answer :func:`final_answer` reads is written: ``(start, end)`` character offsets
    of the boxed content, the marked number, the choice label or the last number; ``None`` when there is none."""
    found = _final(text)
    return (found[1], found[2]) if found is not None else None


def _final(text: str) -> tuple[str, int, int] | None:
    """The final answer and its span in ``text`` (the one rule behind :func:`final_answer` and its span)."""
    lead = len(text) - len(text.lstrip())
    t = text.strip()[:MAX_TEXT]
    if not t:
        return None
    boxed = list(_BOXED.finditer(t))
    if boxed:
        b = boxed[-1]
        inner = b.group(1)
        v = parse_number(inner.strip().lstrip("$"))
        return ("n:" + _fmt(v) if v is not None else "s:" + inner.strip().lower()), lead + b.start(1), lead + b.end(1)
    marked = list(_MARKED.finditer(t))
    if marked:
        v = parse_number(marked[-1].group(1))
        if v is not None:
            return "n:" + _fmt(v), lead + marked[-1].start(1), lead + marked[-1].end(1)
    m = _CHOICE.match(t)
    if m and len(t) <= 40:
        return "c:" + m.group(1).upper(), lead + m.start(1), lead + m.end(1)
    if "```" in t or "def " in t:
        return None
    cut = max(0, len(t) - 400)
    nums = list(_NUM.finditer(t[cut:]))
    if nums:
        v = parse_number(nums[-1].group())
        if v is not None:
            return "n:" + _fmt(v), lead + cut + nums[-1].start(), lead + cut + nums[-1].end()
    if m:
        return "c:" + m.group(1).upper(), lead + m.start(1), lead + m.end(1)
    return None


def _eval_arith(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_arith(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_arith(node.left), _eval_arith(node.right))
    raise ValueError("not plain arithmetic")


def safe_arith(expr: str) -> float | None:
    """Evaluate ``2 x 3 + $4.50`` style arithmetic without ``eval``; ``None`` if it is not arithmetic."""
    e = expr.replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/").replace("%", "/100")
    e = re.sub(r"(?<=[\d\s)])x(?=[\s\d(])", "*", e).strip()
    if not e or len(e) > 120 or not any(op in e for op in "+-*/"):
        return None
    try:
        v = _eval_arith(ast.parse(e, mode="eval"))
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None
    return v if math.isfinite(v) else None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 + 1e-3 * abs(b) or abs(round(a, 2) - b) < 1e-6


def arithmetic_checks(text: str) -> tuple[int, int]:
    """Count the ``a op b = c`` statements (and ``<<a*b=c>>`` annotations) that hold and that do not."""
    ok = bad = 0
    for expr, val in _CALC.findall(text):
        a, v = safe_arith(expr), parse_number(val.strip().lstrip("$"))
        if a is not None and v is not None:
            ok, bad = (ok + 1, bad) if _close(a, v) else (ok, bad + 1)
    # Scan each '=' once (annotations blanked out): the expression is the run of arithmetic
    # characters to its left; ", " separates statements, a bare "," is a thousands separator.
    plain = _CALC.sub(" ", text)
    for m in re.finditer(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)(%?)", plain):
        start = m.start()
        j = start
        while j > 0 and start - j < 80 and plain[j - 1] in _EXPR_CHARS and not (
                plain[j - 1] == "," and plain[j:j + 1] == " "):
            j -= 1
        v = parse_number(m.group(1))
        if v is not None and m.group(2):
            v /= 100.0
        a = safe_arith(plain[j:start])
        if a is not None and v is not None:
            ok, bad = (ok + 1, bad) if _close(a, v) else (ok, bad + 1)
    return ok, bad


def _code_status(text: str) -> tuple[float, float]:
    blocks = _CODE_FENCE.findall(text)
    src = blocks[0] if blocks else (text if text.lstrip().startswith(("def ", "import ", "from ", "class ")) else None)
    if src is None:
        return 0.0, 0.0
    try:
        ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return 1.0, 0.0
    return 1.0, 1.0


def answer_features(query: str, text: str, *, finish_reason: str | None = None) -> list[float]:
    """The feature vector of one answer to one query (see :data:`FEATURE_NAMES`)."""
    t = text.strip()[:MAX_TEXT]
    fa = final_answer(t)
    options = set(_OPTION.findall(query[-800:]))
    is_choice = 1.0 if fa is not None and fa.startswith("c:") and len(t) <= 40 else 0.0
    valid_choice = 1.0 if is_choice and fa is not None and fa[2:] in options else 0.0
    marked = [parse_number(x) for x in _MARKED.findall(t)]
    fv = parse_number(fa[2:]) if fa is not None and fa.startswith("n:") else None
    q_nums = {parse_number(x) for x in _NUM.findall(query[-1500:])} - {None}
    t_nums = {parse_number(x) for x in _NUM.findall(t)} - {None}
    ok, bad = arithmetic_checks(t)
    has_code, parses = _code_status(t)
    lines = [ln for ln in t.splitlines() if ln.strip()]
    return [
        1.0 if not t else 0.0,
        math.log1p(len(t)),
        math.log1p(len(t.split())),
        is_choice,
        valid_choice,
        1.0 if options and not is_choice else 0.0,
        1.0 if fa is not None else 0.0,
        1.0 if _BOXED.search(t) else 0.0,
        1.0 if marked else 0.0,
        1.0 if len({m for m in marked if m is not None}) > 1 else 0.0,
        1.0 if fv is not None and abs(fv - round(fv)) < 1e-9 else 0.0,
        1.0 if fv is not None and fv < 0 else 0.0,
        1.0 if fv is not None and fv in q_nums else 0.0,
        len(q_nums & t_nums) / len(q_nums) if q_nums else 0.0,
        math.log1p(ok),
        math.log1p(bad),
        1.0 if bad else 0.0,
        has_code,
        parses,
        1.0 if _HEDGE.search(t) else 0.0,
        math.log1p(len(_SELF_CORRECT.findall(t))),
        1.0 - len(set(lines)) / len(lines) if lines else 0.0,
        1.0 if finish_reason in ("length", "max_tokens") else 0.0,
    ]
