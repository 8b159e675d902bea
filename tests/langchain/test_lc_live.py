"""crescade_langchain.live: examples streamed through the cascade (or one model), graded and timed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lc_scripted import ScriptedChatModel
from lc_support import BAD_ANSWER, GOOD_ANSWER, cards

from crescade import Example
from crescade_langchain import CascadeChatModel
from crescade_langchain.live import run_example, run_live

Make = Callable[..., CascadeChatModel]


def _example(prompt: str, reference: str = "B") -> Example:
    return Example(prompt_id="q1", prompt=prompt, reference=reference, task="t", grader="choice_letter")


def test_cascade_row_has_route_tiers_timing_and_grade(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": BAD_ANSWER}, mid={"answer": GOOD_ANSWER})
    row = run_example(model, _example(queries["cheap_first"]))
    assert row["routed_model"] == "cheap" and row["model"] == "mid" and row["escalated"] is True
    assert [t["model"] for t in row["tiers"]] == ["cheap", "mid"]
    assert [t["accepted"] for t in row["tiers"]] == [False, True]
    assert row["correct"] is True and row["answer"]
    assert row["ttft_s"] is not None and 0 <= row["ttft_s"] <= row["latency_s"]
    assert row["tpot_s"] is not None and row["tpot_s"] >= 0
    tier_time = sum(t["latency_s"] for t in row["tiers"])
    assert row["overhead_s"] == max(0.0, row["latency_s"] - tier_time)
    assert row["cost_usd"] > 0 and row["output_tokens"] == sum(t["output_tokens"] for t in row["tiers"])


def test_wrong_answer_is_graded_wrong(make_model: Make, queries: dict[str, str]) -> None:
    model = make_model(cheap={"answer": GOOD_ANSWER})
    row = run_example(model, _example(queries["cheap_first"], reference="D"))
    assert row["correct"] is False and row["model"] == "cheap" and row["escalated"] is False


def test_plain_model_row_is_priced_and_timed() -> None:
    model = ScriptedChatModel(model_name="strong", answer="The answer is B, as the options match best.")
    seen: list[tuple[int, dict[str, Any]]] = []
    rows = run_live(model, [_example("Which option? A, B, C or D")] * 2, card=cards()["strong"],
                    on_row=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0, 1] and rows == [r for _, r in seen]
    row = rows[0]
    assert row["model"] == "strong" and row["correct"] is True and "tiers" not in row
    assert row["cost_usd"] > 0 and row["output_tokens"] > 1 and row["tpot_s"] is not None


def test_the_printed_answer_is_the_meaningful_last_line() -> None:
    from crescade_langchain.live import _last_line

    assert _last_line("Work:\n2 + 2 = 4\nAnswer: 4\n") == "Answer: 4"
    assert _last_line("Here it is:\n```python\ndef f(x):\n    return x\n```\n") == "def f(x):"
    assert _last_line("x" * 300).endswith("…") and len(_last_line("x" * 300)) == 100
