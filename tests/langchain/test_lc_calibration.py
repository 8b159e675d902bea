"""Calibration straight from LangChain chat models: collect (resumable), grade, fit, wrap."""

from __future__ import annotations

import zlib
from pathlib import Path

from langchain_core.messages import BaseMessage
from lc_scripted import ScriptedChatModel
from lc_support import POOL, cards, records

from crescade import Example, read_records
from crescade_langchain import CascadeChatModel


def _examples() -> list[Example]:
    seen: dict[str, Example] = {}
    for r in records(n=60):
        seen.setdefault(r.prompt_id, Example(prompt_id=r.prompt_id, prompt=r.prompt, reference="B",
                                             task=r.task, split="train", grader="choice_letter"))
    return list(seen.values())


def _models() -> dict[str, ScriptedChatModel]:
    def sometimes(name: str, every: int):  # type: ignore[no-untyped-def]
        def answer(messages: list[BaseMessage]) -> str:
            n = zlib.crc32(str(messages[-1].content).encode()) % every if every > 1 else 1
            return "B" if n else "I'm not sure, maybe C?"
        return answer
    return {m: ScriptedChatModel(model_name=m, answer=sometimes(m, {"cheap": 2, "mid": 4, "strong": 1000}[m]))
            for m in POOL}


def test_calibrate_collects_grades_fits_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    models = _models()
    cascade = CascadeChatModel.calibrate(models, _examples(), out, prices=cards(), quality_target=0.95,
                                         n_clusters=2, n_folds=3, concurrency=3, progress=False)
    recs = read_records(out)
    assert len(recs) == 60 * len(POOL)
    assert {r.model for r in recs} == set(POOL)
    assert all(r.correct == (1.0 if r.response == "B" else 0.0) for r in recs)  # graded by choice_letter
    assert all(r.latency_s is not None and r.input_tokens > 0 for r in recs)
    reply = cascade.invoke(_examples()[0].prompt)
    assert reply.response_metadata["crescade"]["routed_model"] in POOL
    # a rerun asks nothing again: every pair is already on disk
    before = {m: len(models[m].calls) for m in POOL}
    CascadeChatModel.calibrate(models, _examples(), out, prices=cards(), n_clusters=2, n_folds=3, progress=False)
    assert {m: len(models[m].calls) for m in POOL} == before
