"""Calibration straight from LlamaIndex LLMs: collect (resumable, the core's engine), grade, fit, wrap;
and from_artifact."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from li_scripted import ScriptedLLM
from li_support import POOL, cards, records
from llama_index.core.base.llms.types import ChatMessage

from crescade import Example, read_records
from crescade_llamaindex import CascadeLLM


def _examples() -> list[Example]:
    seen: dict[str, Example] = {}
    for r in records(n=60):
        seen.setdefault(r.prompt_id, Example(prompt_id=r.prompt_id, prompt=r.prompt, reference="B",
                                             task=r.task, split="train", grader="choice_letter"))
    return list(seen.values())


def _llms() -> dict[str, ScriptedLLM]:
    def sometimes(every: int) -> Any:
        def answer(messages: list[ChatMessage]) -> str:
            n = zlib.crc32(str(messages[-1].content).encode()) % every if every > 1 else 1
            return "B" if n else "I'm not sure, maybe C?"
        return answer
    return {m: ScriptedLLM(model_name=m, answer=sometimes({"cheap": 2, "mid": 4, "strong": 1000}[m])) for m in POOL}


def test_calibrate_collects_grades_fits_resumes_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    llms = _llms()
    llm = CascadeLLM.calibrate(llms, _examples(), out, prices=cards(), quality_target=0.95, n_clusters=2,
                               n_folds=3, concurrency=3, progress=False)
    recs = read_records(out)
    assert len(recs) == 60 * len(POOL) and {r.model for r in recs} == set(POOL)
    assert all(r.correct == (1.0 if r.response == "B" else 0.0) for r in recs)
    assert all(r.latency_s is not None and r.input_tokens > 0 for r in recs)
    assert llm.complete(_examples()[0].prompt).additional_kwargs["crescade"]["routed_model"] in POOL
    before = {m: len(llms[m].calls) for m in POOL}
    CascadeLLM.calibrate(llms, _examples(), out, prices=cards(), n_clusters=2, n_folds=3, progress=False)
    assert {m: len(llms[m].calls) for m in POOL} == before  # every pair was already on disk
    llm.cascade.save(tmp_path / "artifact")
    loaded = CascadeLLM.from_artifact(tmp_path / "artifact", llms=llms)
    q = _examples()[1].prompt
    assert loaded.complete(q).additional_kwargs["crescade"]["ladder"] == \
        llm.complete(q).additional_kwargs["crescade"]["ladder"]
