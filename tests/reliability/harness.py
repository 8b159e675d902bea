"""Load under injected faults, for both adapters: ``n`` mixed sync / async / streaming requests at a given
concurrency through a cascade whose tiers are wrapped in ``FaultInjecting*`` models.

Checks, per request: it ended exactly once, with an answer or with one ``DispatchFailedError`` naming every
tier; the answer is what the answering child delivered *for this request*; every tier the account lists
as answered matches a delivery the child made for this request, token for token, and nothing a child
delivered is missing from an account. Used by ``tests/reliability/test_load.py`` (asserts) and by
``benchmarks/reliability.py`` (reports).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for sub in ("", "langchain", "llamaindex"):
    p = str(HERE.parent / sub) if sub else str(HERE.parent)
    if p not in sys.path:
        sys.path.insert(0, p)

from adapter_records import BAD_ANSWER, GOOD_ANSWER, POOL, TOPICS, fitted_cascade, topic_query  # noqa: E402

from crescade.serving.dispatch import DispatchFailedError  # noqa: E402
from crescade.serving.faults import FaultSchedule  # noqa: E402
from crescade.serving.reliability import Cooldowns, Reliability  # noqa: E402
from crescade.serving.timeouts import abandoned_calls  # noqa: E402

MODES = ("sync", "async", "stream", "astream")
TAG = re.compile(r"Request id: (r\d{6})")


def reliability() -> Reliability:
    """Tight enough that hangs cost little, loose enough that a loaded machine never times out a sound call."""
    return Reliability(tier_timeout=2.0, deadline=10.0, max_retries=1, retry_backoff_s=0.01,
                       cooldowns=Cooldowns(base_s=0.05, max_s=0.2))


def schedule(fault_rate: float, seed: int) -> FaultSchedule:
    return FaultSchedule(rate=fault_rate, seed=seed, retry_after_s=0.05, hang_s=30.0, slow_s=0.01)


def query(i: int) -> str:
    topic = list(TOPICS)[i % len(TOPICS)]
    return f"{topic_query(topic, 1000 + i)}\nRequest id: r{i:06d}"


def answer_of(model: str) -> Callable[[str], str]:
    """Deterministic per (model, request): cheap is right 60% of the time, mid 80%, strong always."""
    good = {"cheap": 6, "mid": 8, "strong": 10}[model]

    def text(prompt: str) -> str:
        m = TAG.search(prompt)
        tag = m.group(1) if m else "?"
        h = int(hashlib.sha256(f"{model}:{tag}".encode()).hexdigest()[:8], 16) % 10
        return GOOD_ANSWER if h < good else BAD_ANSWER

    return text


@dataclass
class LoadResult:
    adapter: str
    requests: int
    concurrency: int
    fault_rate: float
    wall_s: float = 0.0
    answered: int = 0
    clear_errors: int = 0
    other_errors: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    child_calls: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    degraded: int = 0
    retries: int = 0
    skipped_tiers: int = 0
    timeouts: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    leaked_threads: int = 0
    leaked_tasks: int = 0
    tokens_in_accounts: int = 0
    tokens_delivered: int = 0

    @property
    def ok(self) -> bool:
        return (not self.other_errors and not self.mismatches and self.lost == 0 and self.duplicated == 0
                and self.answered + self.clear_errors == self.requests and self.leaked_threads == 0
                and self.leaked_tasks == 0 and self.tokens_in_accounts == self.tokens_delivered)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["other_errors"] = self.other_errors[:20]
        d["mismatches"] = self.mismatches[:20]
        return d


def _check_account(res: LoadResult, i: int, account: dict[str, Any], text: str | None,
                   delivered: dict[str, list[Any]]) -> None:
    tag = f"r{i:06d}"
    mine = Counter((d.model, d.input_tokens, d.output_tokens) for d in delivered.get(tag, []))
    tiers = account["tiers"]
    got = Counter((t["model"], t["input_tokens"], t["output_tokens"]) for t in tiers
                  if t["error"] is None and t["error_kind"] != "skipped")
    if got != mine:
        res.mismatches.append(f"{tag}: account tiers {sorted(got.items())} != deliveries {sorted(mine.items())}")
    totals = account["totals"]
    for key in ("input_tokens", "output_tokens"):
        if totals[key] != sum(t[key] for t in tiers):
            res.mismatches.append(f"{tag}: totals[{key}] {totals[key]} != sum of tiers")
    res.tokens_in_accounts += sum(t["input_tokens"] + t["output_tokens"] for t in tiers)
    if text is not None:
        final = account["model"]
        answers = [d.text for d in delivered.get(tag, []) if d.model == final]
        if text not in answers:
            res.mismatches.append(f"{tag}: answer {text!r} is not what {final} delivered for it ({answers})")
    res.escalated += bool(account["escalated"])
    res.degraded += account.get("degraded") is not None
    res.retries += sum(t["retry"] > 0 for t in tiers)
    res.skipped_tiers += sum(t["error_kind"] == "skipped" for t in tiers)
    res.timeouts += sum(t["error_kind"] == "timeout" for t in tiers)


def _finish(res: LoadResult, outcomes: list[tuple[int, str, Any]], faults: FaultSchedule,
            account_of: Callable[[Any], tuple[dict[str, Any], str]], t0: float) -> LoadResult:
    res.wall_s = time.perf_counter() - t0
    faults.release()
    delivered: dict[str, list[Any]] = {}
    for d in faults.deliveries:
        m = TAG.search(d.key)
        delivered.setdefault(m.group(1) if m else "?", []).append(d)
    res.tokens_delivered = sum((d.input_tokens or 0) + (d.output_tokens or 0) for d in faults.deliveries)
    seen = Counter(i for i, _, _ in outcomes)
    res.lost = sum(1 for i in range(res.requests) if seen[i] == 0)
    res.duplicated = sum(c - 1 for c in seen.values() if c > 1)
    for i, kind, value in outcomes:
        if kind == "answer":
            res.answered += 1
            account, text = account_of(value)
            _check_account(res, i, account, text, delivered)
        elif kind == "error":
            res.clear_errors += 1
            err: DispatchFailedError = value
            ladder_models = {a.model for a in err.attempts}
            named = {f.model for f in err.failures}
            if named != ladder_models or not all(f"({m})" in str(err) for m in named):
                res.mismatches.append(f"r{i:06d}: error does not name every tier: {err}")
            _check_account(res, i, {"tiers": [a.to_dict() for a in err.attempts], "escalated": False,
                                    "degraded": None, "model": None,
                                    "totals": {"input_tokens": sum(a.input_tokens for a in err.attempts),
                                               "output_tokens": sum(a.output_tokens for a in err.attempts)}},
                           None, delivered)
        else:
            res.other_errors.append(f"r{i:06d}: {value!r}")
    res.child_calls = len(faults.log)
    res.faults_injected = {k: v for k, v in sorted(faults.counts().items()) if k != "none"}
    deadline = time.monotonic() + 10
    while abandoned_calls() and time.monotonic() < deadline:
        time.sleep(0.02)
    res.leaked_threads = abandoned_calls() + sum(1 for t in threading.enumerate()
                                                 if t.name.startswith("crescade-") and t.is_alive())
    return res


async def _drive(n: int, concurrency: int, run: Callable[[int, str], Any]) -> tuple[list[tuple[int, str, Any]], int]:
    """Every request once, at most ``concurrency`` at a time; returns the outcomes and the tasks left over."""
    sem = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="load")

    async def one(i: int) -> tuple[int, str, Any]:
        mode = MODES[i % len(MODES)]
        async with sem:
            try:
                if mode in ("sync", "stream"):
                    value = await loop.run_in_executor(pool, run, i, mode)
                else:
                    value = await run(i, mode)
                return i, "answer", value
            except DispatchFailedError as exc:
                return i, "error", exc
            except Exception as exc:
                return i, "other", exc

    try:
        outcomes = list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        pool.shutdown(wait=True)
    await asyncio.sleep(0)
    return outcomes, sum(1 for t in asyncio.all_tasks() if t is not asyncio.current_task())


def run_langchain(n: int = 2000, concurrency: int = 50, fault_rate: float = 0.2, seed: int = 0) -> LoadResult:
    """The LangChain adapter under load: ``CascadeChatModel`` over faulty scripted chat models."""
    from langchain_core.messages import AIMessage, AIMessageChunk
    from lc_scripted import ScriptedChatModel

    from crescade_langchain import CascadeChatModel
    from crescade_langchain.testing import FaultInjectingChatModel

    faults = schedule(fault_rate, seed)
    children = {m: FaultInjectingChatModel(inner=ScriptedChatModel(model_name=m, answer=_messages_answer(m)),
                                           faults=faults, fault_key=m) for m in POOL}
    model = CascadeChatModel(models=children, cascade=fitted_cascade(), reliability=reliability())
    res = LoadResult("langchain", n, concurrency, fault_rate)

    def run(i: int, mode: str) -> Any:
        if mode == "sync":
            return model.invoke(query(i))
        if mode == "stream":
            return _merge(list(model.stream(query(i))))
        if mode == "async":
            return model.ainvoke(query(i))
        return _amerge(model.astream(query(i)))

    async def _merge_async(agen: Any) -> Any:
        return _merge([c async for c in agen])

    def _amerge(agen: Any) -> Any:
        return _merge_async(agen)

    def _merge(chunks: list[AIMessageChunk]) -> AIMessageChunk:
        out = chunks[0]
        for c in chunks[1:]:
            out = out + c
        return out

    def account_of(msg: AIMessage | AIMessageChunk) -> tuple[dict[str, Any], str]:
        account = msg.response_metadata["crescade"]
        usage = msg.usage_metadata or {}
        totals = account["totals"]
        if (usage.get("input_tokens"), usage.get("output_tokens")) != (totals["input_tokens"],
                                                                        totals["output_tokens"]):
            res.mismatches.append(f"usage_metadata {usage} != account totals {totals}")
        return account, str(msg.content)

    t0 = time.perf_counter()
    outcomes, res.leaked_tasks = asyncio.run(_drive(n, concurrency, run))
    for mode in MODES:
        res.by_mode[mode] = sum(1 for i, _, _ in outcomes if MODES[i % len(MODES)] == mode)
    return _finish(res, outcomes, faults, account_of, t0)


def _messages_answer(model: str) -> Callable[[Any], str]:
    text = answer_of(model)
    return lambda messages: text("\n".join(str(m.content) for m in messages))


def run_llamaindex(n: int = 2000, concurrency: int = 50, fault_rate: float = 0.2, seed: int = 0) -> LoadResult:
    """The LlamaIndex adapter under load: ``CascadeLLM`` over faulty scripted LLMs."""
    from li_scripted import ScriptedLLM
    from llama_index.core.base.llms.types import ChatMessage, MessageRole

    from crescade_llamaindex import CascadeLLM
    from crescade_llamaindex.testing import FaultInjectingLLM

    faults = schedule(fault_rate, seed)
    children = {m: FaultInjectingLLM(inner=ScriptedLLM(model_name=m, answer=_messages_answer(m)), faults=faults,
                                     fault_key=m) for m in POOL}
    llm = CascadeLLM(llms=children, cascade=fitted_cascade(), reliability=reliability())
    res = LoadResult("llamaindex", n, concurrency, fault_rate)

    def msgs(i: int) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=query(i))]

    def run(i: int, mode: str) -> Any:
        if mode == "sync":
            return llm.chat(msgs(i))
        if mode == "stream":
            return list(llm.stream_chat(msgs(i)))[-1]
        if mode == "async":
            return llm.achat(msgs(i))
        return _last(llm.astream_chat(msgs(i)))

    async def _last(agen_coro: Any) -> Any:
        last = None
        async for item in await agen_coro:
            last = item
        return last

    def account_of(resp: Any) -> tuple[dict[str, Any], str]:
        account = resp.additional_kwargs["crescade"]
        totals = account["totals"]
        kw = resp.additional_kwargs
        if (kw.get("prompt_tokens"), kw.get("completion_tokens")) != (totals["input_tokens"],
                                                                       totals["output_tokens"]):
            res.mismatches.append(f"usage {kw.get('prompt_tokens')}/{kw.get('completion_tokens')} != totals {totals}")
        return account, resp.message.content or ""

    t0 = time.perf_counter()
    outcomes, res.leaked_tasks = asyncio.run(_drive(n, concurrency, run))
    for mode in MODES:
        res.by_mode[mode] = sum(1 for i, _, _ in outcomes if MODES[i % len(MODES)] == mode)
    return _finish(res, outcomes, faults, account_of, t0)
