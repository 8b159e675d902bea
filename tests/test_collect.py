"""The collection engine: resumable, append-only, Ctrl-C safe, bounded concurrency, sync and async."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from crescade import Answer, ModelCard, Outcomes, read_records
from crescade.common.errors import ConfigError, PricingError, RecordsError
from crescade.common.progress import Progress
from crescade.tools.collect import CollectReport, Example, acollect, collect, load_examples, save_examples

MODELS = ["small", "large"]
PRICES = {
    "small": ModelCard("small", 0.1, 0.2),
    "large": ModelCard("large", 2.0, 8.0),
}


def make_examples(n: int = 12) -> list[Example]:
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(Example(f"p{i}", f"What is {i} + {i}?", str(2 * i), task="math", split="train",
                               grader="numeric"))
        elif i % 3 == 1:
            out.append(Example(f"p{i}", f"Pick the letter for item {i}.", "B", task="mcq", split="test",
                               grader="choice_letter"))
        else:
            out.append(Example(f"p{i}", f"Say the word w{i}.", f"w{i}", task="echo"))
    return out


class FakeModels:
    """Deterministic answers: ``large`` is always right, ``small`` is wrong on every fourth prompt.

    Tracks calls and the maximum number of simultaneous calls. ``fail`` pairs raise; ``interrupt_after``
    raises KeyboardInterrupt on that call number.
    """

    def __init__(self, *, delay: float = 0.0, fail: set[tuple[str, str]] | None = None,
                 interrupt_after: int | None = None) -> None:
        self.delay, self.fail, self.interrupt_after = delay, fail or set(), interrupt_after
        self.calls: Counter[tuple[str, str]] = Counter()
        self.active = self.max_active = 0
        self._lock = threading.Lock()

    def answer(self, model: str, ex: Example) -> Answer:
        i = int(ex.prompt_id[1:])
        right = model == "large" or i % 4 != 0
        if ex.grader == "numeric":
            text = f"Let me add. The answer is {2 * i if right else 2 * i + 1}."
        elif ex.grader == "choice_letter":
            text = "(B) because..." if right else "Answer: C"
        else:
            text = ex.reference if right else "no"
        tokens = (len(ex.prompt), 7) if model == "large" else (None, None)  # small: counted by crescade
        return Answer(text, model, input_tokens=tokens[0], output_tokens=tokens[1], finish_reason="stop",
                      logprob_mean=-0.25 if model == "large" else None, ttft_s=0.01, tpot_s=0.002)

    def _enter(self, model: str, ex: Example) -> int:
        with self._lock:
            self.calls[(ex.prompt_id, model)] += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return sum(self.calls.values())

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _check(self, n: int, model: str, ex: Example) -> None:
        if self.interrupt_after is not None and n == self.interrupt_after:
            raise KeyboardInterrupt
        if (ex.prompt_id, model) in self.fail:
            raise RuntimeError("upstream 503 for api_key=sk-abcdefghijklmnop")

    def __call__(self, model: str, ex: Example) -> Answer:
        n = self._enter(model, ex)
        try:
            if self.delay:
                time.sleep(self.delay)
            self._check(n, model, ex)
            return self.answer(model, ex)
        finally:
            self._leave()

    async def acall(self, model: str, ex: Example) -> Answer:
        n = self._enter(model, ex)
        try:
            await asyncio.sleep(self.delay)
            self._check(n, model, ex)
            return self.answer(model, ex)
        finally:
            self._leave()


def run(examples: list[Example], fake: FakeModels | Callable[..., Answer], out: Path, **kw: object) -> CollectReport:
    kw.setdefault("progress", False)
    return collect(examples, fake, MODELS, out, prices=PRICES, **kw)  # type: ignore[arg-type]


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- basics


def test_collect_writes_graded_priced_records(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    examples = make_examples()
    fake = FakeModels()
    report = run(examples, fake, out)
    assert (report.done, report.skipped, report.failed) == (24, 0, [])
    assert report.seconds > 0
    assert sum(fake.calls.values()) == 24

    recs = read_records(out)
    assert len(recs) == 24
    by = {(r.prompt_id, r.model): r for r in recs}
    assert by[("p0", "small")].correct == 0.0 and by[("p0", "large")].correct == 1.0
    assert by[("p3", "small")].correct == 1.0  # numeric, right
    assert by[("p4", "small")].correct == 0.0  # choice_letter, "Answer: C"
    assert by[("p1", "small")].correct == 1.0  # choice_letter, "(B) because..."
    assert by[("p8", "small")].correct == 0.0 and by[("p2", "small")].correct == 1.0  # exact_match

    large = by[("p1", "large")]
    assert (large.input_tokens, large.output_tokens) == (len(examples[1].prompt), 7)
    assert large.cost_usd == pytest.approx((len(examples[1].prompt) * 2.0 + 7 * 8.0) / 1e6)
    assert large.logprob_mean == -0.25 and large.finish_reason == "stop"
    assert (large.task, large.split, large.ttft_s, large.tpot_s) == ("mcq", "test", 0.01, 0.002)
    assert large.latency_s is not None and large.latency_s >= 0  # measured around the call

    small = by[("p1", "small")]
    assert small.input_tokens > 0 and small.output_tokens > 0  # counted when the provider gave none
    assert small.cost_usd == pytest.approx((small.input_tokens * 0.1 + small.output_tokens * 0.2) / 1e6)
    assert small.logprob_mean is None and by[("p2", "small")].task == "echo" and by[("p2", "small")].split is None

    outcomes = Outcomes.load(out)
    assert outcomes.n_prompts == 12 and sorted(outcomes.models) == sorted(MODELS)
    assert report.to_dict() == {"done": 24, "skipped": 0, "failed": [], "seconds": report.seconds}


def test_rerun_skips_finished_pairs(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples()
    run(examples[:6], FakeModels(), out)
    fake = FakeModels()
    report = run(examples, fake, out)
    assert (report.done, report.skipped) == (12, 12)
    assert set(fake.calls) == {(e.prompt_id, m) for e in examples[6:] for m in MODELS}
    again = FakeModels()
    assert run(examples, again, out).skipped == 24 and not again.calls
    assert len(read_records(out)) == 24


def test_new_model_only_collects_its_column(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples(4)
    collect(examples, FakeModels(), ["small"], out, prices=PRICES, progress=False)
    fake = FakeModels()
    report = collect(examples, fake, MODELS, out, prices=PRICES, progress=False)
    assert report.done == 4 and {m for _, m in fake.calls} == {"large"}


def test_failures_are_reported_not_recorded(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    fake = FakeModels(fail={("p1", "small"), ("p5", "large")})
    report = run(make_examples(), fake, out)
    assert report.done == 22
    assert sorted((p, m) for p, m, _ in report.failed) == [("p1", "small"), ("p5", "large")]
    err = report.failed[0][2]
    assert err.startswith("RuntimeError: upstream 503") and "sk-abc" not in err and "[redacted]" in err
    assert {(r["prompt_id"], r["model"]) for r in rows(out)}.isdisjoint({("p1", "small"), ("p5", "large")})
    assert report.to_dict()["failed"][0].keys() == {"prompt_id", "model", "error"}
    # a rerun collects exactly the failed pairs
    fake2 = FakeModels()
    assert run(make_examples(), fake2, out).done == 2 and len(fake2.calls) == 2
    assert len(Outcomes.load(out).prompt_ids) == 12


def test_retries(tmp_path: Path) -> None:
    attempts: Counter[str] = Counter()

    def flaky(model: str, ex: Example) -> Answer:
        attempts[ex.prompt_id + model] += 1
        if attempts[ex.prompt_id + model] < 3:
            raise TimeoutError("slow")
        return Answer(ex.reference, model, 1, 1)

    examples = make_examples(2)
    report = run(examples, flaky, tmp_path / "a.jsonl", retries=2, backoff_s=0)
    assert report.done == 4 and not report.failed and set(attempts.values()) == {3}
    attempts.clear()
    report = run(examples, flaky, tmp_path / "b.jsonl", retries=1, backoff_s=0)
    assert report.done == 0 and len(report.failed) == 4 and report.failed[0][2] == "TimeoutError: slow"


def test_grader_problems_and_bad_answers_are_failures(tmp_path: Path) -> None:
    examples = [Example("x", "q", "not a letter", grader="choice_letter"), Example("y", "q", "a")]

    def call(model: str, ex: Example) -> Answer:
        return "plain text" if ex.prompt_id == "y" else Answer("A", model)  # type: ignore[return-value]

    report = run(examples, call, tmp_path / "r.jsonl")
    assert report.done == 0
    errors = {p: e for p, _, e in report.failed}
    assert errors["x"].startswith("ConfigError: choice_letter: reference")
    assert errors["y"].startswith("TypeError: call returned str")


def test_custom_named_grader(tmp_path: Path) -> None:
    examples = [Example("x", "q", "cat", grader="contains")]
    report = collect(
        examples, lambda m, e: Answer("a cat sat", m), ["small"], tmp_path / "r.jsonl", prices=PRICES,
        progress=False, graders={"contains": lambda resp, ref: ref in resp},
    )
    assert report.done == 1 and read_records(tmp_path / "r.jsonl")[0].correct == 1.0


# --------------------------------------------------------------------------- checks before any call


def test_unknown_price_raises_before_any_call(tmp_path: Path) -> None:
    fake = FakeModels()
    with pytest.raises(PricingError, match="no price for model\\(s\\) 'mystery'"):
        collect(make_examples(), fake, ["small", "mystery"], tmp_path / "r.jsonl", prices=PRICES, progress=False)
    assert not fake.calls and not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out": "r.csv"}, "plain .jsonl"),
        ({"out": "r.jsonl.gz"}, "plain .jsonl"),
        ({"models": "small"}, "sequence of names"),
        ({"models": []}, "no models"),
        ({"models": ["small", "small"]}, "duplicate model"),
        ({"concurrency": 0}, "concurrency"),
        ({"retries": -1}, "retries"),
        ({"examples": [Example("a", "q", "r"), Example("a", "q2", "r")]}, "duplicate prompt_id"),
        ({"examples": [Example("a", "q", "r", grader="nope")]}, "unknown grader 'nope'"),
    ],
)
def test_bad_arguments_raise_before_any_call(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    fake = FakeModels()
    args: dict[str, object] = {"examples": make_examples(2), "models": MODELS, "out": "r.jsonl"}
    args.update(kwargs)
    out = tmp_path / str(args.pop("out"))
    with pytest.raises(ConfigError, match=match):
        collect(args["examples"], fake, args["models"], out, prices=PRICES, progress=False,  # type: ignore[arg-type]
                **{k: v for k, v in args.items() if k not in ("examples", "models")})  # type: ignore[arg-type]
    assert not fake.calls


def test_output_of_another_data_set_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    run(make_examples(2), FakeModels(), out)
    changed = [Example("p0", "a different question", "0", grader="numeric")]
    fake = FakeModels()
    with pytest.raises(ConfigError, match="line 1: prompt_id 'p0' has a different prompt"):
        run(changed, fake, out)
    assert not fake.calls


# --------------------------------------------------------------------------- crash safety


def test_partial_last_line_is_truncated_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples(3)
    run(examples, FakeModels(), out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # a crash in the middle of the last write
    fake = FakeModels()
    with pytest.warns(UserWarning, match="removed a partial last line"):
        report = run(examples, fake, out)
    assert report.done == 1 and report.skipped == 5 and sum(fake.calls.values()) == 1
    assert len(read_records(out)) == 6


def test_complete_last_row_without_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples(3)
    run(examples, FakeModels(), out)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    fake = FakeModels()
    report = run(examples, fake, out)
    assert report.skipped == 6 and not fake.calls
    assert out.read_bytes().endswith(b"\n") and len(read_records(out)) == 6


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text('{"prompt_id": "q0", "model": "small"}\n{oops\n{"prompt_id": "q1", "model": "small"}\n')
    with pytest.raises(RecordsError, match="line 2"):
        run(make_examples(2), FakeModels(), out)


@pytest.mark.filterwarnings("ignore:.*dropped .* missing some model")
def test_keyboard_interrupt_leaves_a_valid_subset_and_a_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples(20)
    fake = FakeModels(delay=0.01, interrupt_after=15)
    with pytest.raises(KeyboardInterrupt):
        run(examples, fake, out, concurrency=4)
    time.sleep(0.1)  # let the calls still in flight finish: they must not write any more
    partial = out.read_bytes()
    assert partial.endswith(b"\n")
    recs = read_records(out, incomplete="drop")
    n_lines = partial.count(b"\n")
    assert 0 < n_lines < 40 and len({(r["prompt_id"], r["model"]) for r in rows(out)}) == n_lines
    assert all(r.model in MODELS for r in recs)
    assert sum(fake.calls.values()) < 40  # queued pairs were cancelled

    fake2 = FakeModels()
    report = run(examples, fake2, out)
    assert report.skipped == n_lines and report.done == 40 - n_lines
    assert len(Outcomes.load(out).prompt_ids) == 20


CTRL_C_SCRIPT = """
import sys, time
from crescade import Answer, ModelCard
from crescade.tools.collect import Example, collect

def call(model, ex):
    time.sleep(0.02)
    return Answer(ex.reference, model, 3, 1)

examples = [Example(f"p{i}", f"q{i}", "r") for i in range(400)]
prices = {m: ModelCard(m, 1.0, 1.0) for m in ("a", "b")}
collect(examples, call, ["a", "b"], sys.argv[1], prices=prices, concurrency=4, progress=False)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery")
@pytest.mark.filterwarnings("ignore:.*dropped .* missing some model")
def test_ctrl_c_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, str(out)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while (not out.exists() or out.read_bytes().count(b"\n") < 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)  # exits promptly: queued pairs are not run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    data = out.read_bytes()
    assert data.endswith(b"\n") and 20 <= data.count(b"\n") < 800
    assert len(read_records(out, incomplete="drop")) >= 10  # every line is a valid record


def test_concurrency_bound_is_respected(tmp_path: Path) -> None:
    fake = FakeModels(delay=0.02)
    report = run(make_examples(12), fake, tmp_path / "r.jsonl", concurrency=3)
    assert report.done == 24
    assert fake.max_active == 3


def test_progress_bar_reports_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRESCADE_PROGRESS", raising=False)
    # the module, not the `crescade.tools.collect` function the package re-exports under the same name
    monkeypatch.setattr(sys.modules["crescade.tools.collect"], "Progress", functools.partial(Progress, delay=0.0))
    run(make_examples(2), FakeModels(delay=0.001), tmp_path / "r.jsonl", progress=True)
    assert "collect: 4/4 (100%)" in capsys.readouterr().err
    run(make_examples(3), FakeModels(delay=0.001), tmp_path / "r.jsonl", progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- async


async def test_acollect_is_equivalent(tmp_path: Path) -> None:
    examples = make_examples()
    sync_out, async_out = tmp_path / "s.jsonl", tmp_path / "a.jsonl"
    fail = {("p2", "large")}
    sreport = run(examples, FakeModels(fail=fail), sync_out)
    fake = FakeModels(delay=0.01, fail=fail)
    areport = await acollect(examples, fake.acall, MODELS, async_out, prices=PRICES, concurrency=3, progress=False)
    assert (areport.done, areport.skipped, areport.failed) == (sreport.done, sreport.skipped, sreport.failed)
    assert fake.max_active == 3

    def normalised(path: Path) -> list[dict[str, object]]:  # latency is measured, so it differs between runs
        return sorted(({k: v for k, v in r.items() if k != "latency_s"} for r in rows(path)),
                      key=lambda r: (str(r["prompt_id"]), str(r["model"])))

    assert len(normalised(sync_out)) == 23 and normalised(sync_out) == normalised(async_out)

    fake2 = FakeModels()
    again = await acollect(examples, fake2.acall, MODELS, async_out, prices=PRICES, progress=False)
    assert (again.done, again.skipped) == (1, 23) and list(fake2.calls) == [("p2", "large")]


async def test_acollect_cancelled_leaves_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    examples = make_examples(20)
    fake = FakeModels(delay=0.02)
    task = asyncio.ensure_future(acollect(examples, fake.acall, MODELS, out, prices=PRICES, concurrency=4,
                                          progress=False))
    while not out.exists() or out.read_bytes().count(b"\n") < 6:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    n_lines = out.read_bytes().count(b"\n")
    assert out.read_bytes().endswith(b"\n") and 6 <= n_lines < 40
    assert sum(fake.calls.values()) < 40
    report = await acollect(examples, FakeModels().acall, MODELS, out, prices=PRICES, progress=False)
    assert report.skipped == n_lines and report.done == 40 - n_lines
    assert len(Outcomes.load(out).prompt_ids) == 20


async def test_acollect_unknown_price_makes_no_call(tmp_path: Path) -> None:
    fake = FakeModels()
    with pytest.raises(PricingError):
        await acollect(make_examples(), fake.acall, ["nobody"], tmp_path / "r.jsonl", prices=PRICES)
    assert not fake.calls


# --------------------------------------------------------------------------- example files


def test_examples_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    examples = make_examples(5)
    save_examples(examples, path)
    assert load_examples(path) == examples


def test_load_examples_accepts_numbers_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    path.write_text('{"prompt_id": 7, "prompt": "2+5?", "reference": 7, "grader": "numeric", "extra": 1}\n\n')
    assert load_examples(path) == [Example("7", "2+5?", "7", grader="numeric")]
    path.write_text('{"prompt_id": "a", "prompt": "q", "reference": "r"}\n{"prompt_id": "b", "prompt": "q"}\n')
    with pytest.raises(RecordsError, match="line 2, column 'reference': missing"):
        load_examples(path)
    path.write_text('{"prompt_id": "a", "prompt": "q", "reference": "r"}\n' * 2)
    with pytest.raises(RecordsError, match="duplicate prompt_id 'a'"):
        load_examples(path)
    path.write_text("")
    with pytest.raises(RecordsError, match="no examples"):
        load_examples(path)


def test_unencodable_answer_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    def call(model: str, ex: Example) -> Answer:
        return Answer("bad \ud800 surrogate" if ex.prompt_id == "p0" else ex.reference, model, 1, 1)

    report = run([*make_examples(3)[1:], Example("p0", "q", "r")], call, tmp_path / "r.jsonl")
    assert report.done == 4 and {p for p, _, _ in report.failed} == {"p0"}
    assert "UnicodeEncodeError" in report.failed[0][2]


def test_impossible_measurements_are_recorded_as_unknown(tmp_path: Path) -> None:
    def call(model: str, ex: Example) -> Answer:
        return Answer(ex.reference, model, 1, 1, latency_s=-1.0, ttft_s=float("nan"), logprob_mean=float("inf"))

    with pytest.warns(RuntimeWarning, match="not a valid measurement"):
        run([Example("x", "q", "r")], call, tmp_path / "r.jsonl")
    (rec,) = [r for r in read_records(tmp_path / "r.jsonl") if r.model == "small"]
    assert rec.ttft_s is None and rec.logprob_mean is None
    assert rec.latency_s is not None and rec.latency_s >= 0  # measured around the call instead


def test_the_token_logprob_summary_is_recorded_in_every_column(tmp_path: Path) -> None:
    from crescade.engine.logprobs import LOGPROB_COLUMNS, summarize_logprobs

    summary = summarize_logprobs(["So", " it", " is", " 4", "2"], [-0.1, -0.2, -0.3, -1.0, -2.0])
    assert summary is not None and summary.final_mean is not None

    def call(model: str, ex: Example) -> Answer:
        if model == "small":
            return Answer("So it is 42", model, 1, 5, logprobs=summary)
        return Answer("So it is 42", model, 1, 5, logprob_mean=0.5)  # not a log-probability

    with pytest.warns(RuntimeWarning, match="not a log-probability"):
        run([Example("x", "q", "42")], call, tmp_path / "r.jsonl")
    by = {r.model: r for r in read_records(tmp_path / "r.jsonl")}
    assert by["small"].logprobs == summary
    assert [getattr(by["small"], c) for c in LOGPROB_COLUMNS] == list(summary.values())
    assert all(getattr(by["large"], c) is None for c in LOGPROB_COLUMNS)
