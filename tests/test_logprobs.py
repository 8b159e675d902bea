"""Tests of crescade.engine.logprobs: the token-logprob summary the QE reads, and its record/answer forms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crescade import Answer, ConfigError, Outcomes, Record, read_records, write_records
from crescade.engine.logprobs import (
    LOGPROB_COLUMNS,
    LOGPROB_FLOOR,
    LOGPROB_STATS,
    LogprobSummary,
    summarize_logprobs,
    summary_from_provider,
)
from crescade.engine.stage2 import LOGPROB_FEATURES, extra_features, logprob_features


def test_whole_answer_statistics() -> None:
    tokens = ["The", " answer", " is", " 1", "2", "."]
    lps = [-0.1, -0.2, -0.3, -2.0, -1.0, -0.4]
    s = summarize_logprobs(tokens, lps)
    assert s is not None
    assert s.mean == pytest.approx(np.mean(lps)) and s.min == -2.0
    assert s.p10 == pytest.approx(np.percentile(lps, 10)) and s.p25 == pytest.approx(np.percentile(lps, 25))
    assert s.min <= s.p10 <= s.p25 <= s.mean  # type: ignore[operator]


def test_final_answer_span_is_mapped_to_its_tokens() -> None:
    # "12" is written by the tokens " 1" and "2": only they count for the final-answer statistics
    s = summarize_logprobs(["The", " answer", " is", " 1", "2", "."], [-0.1, -0.2, -0.3, -2.0, -1.0, -0.4])
    assert s is not None and s.final_mean == pytest.approx(-1.5) and s.final_min == -2.0


def test_final_span_follows_the_final_answer_rule() -> None:
    # the marked answer, not the last number, is the final answer; a token straddling the span counts
    tokens = ["3 + 4 = 7", "\nAnswer:", " 7", "\n(checked 2 ways)"]
    s = summarize_logprobs(tokens, [-0.5, -0.1, -3.0, -0.2])
    assert s is not None and s.final_mean == -3.0 and s.final_min == -3.0
    boxed = summarize_logprobs(["\\box", "ed{4", "2}", " done"], [-0.1, -0.7, -0.9, -0.05])
    assert boxed is not None and boxed.final_mean == pytest.approx(-0.8) and boxed.final_min == -0.9


def test_no_final_answer_leaves_the_final_statistics_absent() -> None:
    s = summarize_logprobs(["def", " f", "():", " pass"], [-0.1, -0.2, -0.3, -0.4])
    assert s is not None and s.final_mean is None and s.final_min is None and s.mean == pytest.approx(-0.25)
    assert math.isnan(s.values()[LOGPROB_STATS.index("final_mean")])


def test_empty_answer_has_no_summary() -> None:
    assert summarize_logprobs([], []) is None


def test_floor_and_rounding() -> None:
    s = summarize_logprobs(["a", "b"], [float("-inf"), 5e-5])  # -inf: a token given no chance; +5e-5: rounding
    assert s is not None and s.min == LOGPROB_FLOOR and s.mean == pytest.approx(LOGPROB_FLOOR / 2)


@pytest.mark.parametrize(
    ("tokens", "lps", "needle"),
    [
        (["a", "b"], [-0.1], "pair up"),
        ("ab", [-0.1, -0.2], "not one string"),
        (["a", 3], [-0.1, -0.2], "token 1"),
        (["a"], [0.5], "<= 0"),
        (["a"], [float("nan")], "<= 0"),
        (["a"], ["-0.1"], "not a number"),
    ],
)
def test_bad_input_is_a_clear_error(tokens: list[str], lps: list[float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as e:
        summarize_logprobs(tokens, lps)
    assert "\n" not in str(e.value)


def test_provider_entries_of_every_shape() -> None:
    class Tok:
        def __init__(self, token: str, logprob: float) -> None:
            self.token, self.logprob = token, logprob

    want = summarize_logprobs(["x", " 4"], [-0.5, -0.25])
    assert summary_from_provider([("x", -0.5), (" 4", -0.25)]) == want
    assert summary_from_provider([{"token": "x", "logprob": -0.5}, {"token": " 4", "logprob": -0.25}]) == want
    assert summary_from_provider([Tok("x", -0.5), Tok(" 4", -0.25)]) == want
    # a provider's odd output is no signal, never an error
    assert summary_from_provider([]) is None
    assert summary_from_provider([{"token": "x"}]) is None
    assert summary_from_provider([("x", float("nan"))]) is None
    assert summary_from_provider([("x", True)]) is None


def test_summary_values_columns_round_trip() -> None:
    s = LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0, final_mean=None, final_min=None)
    assert LogprobSummary.from_values(s.values()) == s
    assert s.columns() == dict(zip(LOGPROB_COLUMNS, [-0.5, -2.0, -1.5, -1.0, None, None], strict=True))
    assert LogprobSummary.from_values([math.nan] * len(LOGPROB_STATS)) is None
    with pytest.raises(ConfigError, match="6 values"):
        LogprobSummary.from_values([0.0])
    with pytest.raises(ConfigError, match="finite"):
        LogprobSummary(mean=math.nan)
    with pytest.raises(ConfigError, match="<= 0"):
        LogprobSummary(mean=-1.0, min=0.5)


def test_answer_keeps_summary_and_mean_in_step() -> None:
    s = LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0)
    assert Answer("t", "m", logprobs=s).logprob_mean == -0.5
    legacy = Answer("t", "m", logprob_mean=-0.25)  # a caller that knows only the mean
    assert legacy.logprobs == LogprobSummary(mean=-0.25)
    assert Answer("t", "m", logprob_mean=float("inf")).logprobs is None
    assert Answer("t", "m", logprob_mean=0.3).logprobs is None  # not a log-probability: no signal
    with pytest.raises(ConfigError, match="LogprobSummary"):
        Answer("t", "m", logprobs=[("t", -0.1)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the QE's encoding


def _named(s: LogprobSummary | None) -> dict[str, float]:
    values = s.values() if s is not None else (math.nan,) * len(LOGPROB_STATS)
    return dict(zip(LOGPROB_FEATURES, logprob_features(np.asarray(values))[0], strict=True))


def test_qe_encoding_flags_and_values() -> None:
    full = _named(LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0, final_mean=-0.7, final_min=-0.9))
    assert full == {"has_logprob": 1.0, "logprob_mean": -0.5, "logprob_min": -2.0, "logprob_p10": -1.5,
                    "logprob_p25": -1.0, "has_final_logprob": 1.0, "logprob_final_mean": -0.7,
                    "logprob_final_min": -0.9}
    no_final = _named(LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0))
    assert no_final["has_final_logprob"] == 0.0 and math.isnan(no_final["logprob_final_mean"])
    assert no_final["logprob_min"] == -2.0
    nothing = _named(None)  # both flags off, every value absent (NaN: neutral for the estimator)
    assert nothing["has_logprob"] == nothing["has_final_logprob"] == 0.0
    assert all(math.isnan(v) for k, v in nothing.items() if not k.startswith("has_"))
    mean_only = _named(LogprobSummary(mean=-0.25))  # an older record
    assert mean_only["has_logprob"] == 1.0 and mean_only["logprob_mean"] == -0.25
    assert math.isnan(mean_only["logprob_min"])


def test_absent_logprobs_are_neutral_not_confident() -> None:
    """An estimator trained where logprobs carry the signal judges an answer without them on its other
    features (here: none), never as the confident answers whose values are near 0."""
    from crescade.engine.stage2 import EXTRA_NAMES, QE_FEATURE_NAMES, QualityEstimator

    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.5).astype(float)
    x = np.zeros((n, len(QE_FEATURE_NAMES)))
    base = len(QE_FEATURE_NAMES) - len(EXTRA_NAMES)
    col = {name: base + EXTRA_NAMES.index(name) for name in LOGPROB_FEATURES}
    for i in range(n):
        s = LogprobSummary(mean=-0.1 if y[i] else -1.5, min=-0.3 if y[i] else -3.0, p10=-0.2, p25=-0.15)
        for name, v in _named(s).items():
            x[i, col[name]] = v
    qe = QualityEstimator().fit(x, y)
    absent = np.zeros(len(QE_FEATURE_NAMES))
    for name, v in _named(None).items():
        absent[col[name]] = v
    confident, unsure = x[y == 1][0], x[y == 0][0]
    p = qe.predict(np.vstack([confident, unsure, absent]))
    assert p[0] > 0.9 and p[1] < 0.1
    assert 0.2 < p[2] < 0.8  # neither: the other features (none here) decide


def test_serving_row_carries_the_summary_in_the_named_columns() -> None:
    from crescade.engine.stage2 import EXTRA_NAMES

    s = LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0, final_mean=-0.7, final_min=-0.9)
    row = dict(zip(EXTRA_NAMES, extra_features(prior=0.5, global_prior=0.5, answer_logfreq=0.0, logprobs=s,
                                               final="n:1", history=[]), strict=True))
    assert {k: row[k] for k in LOGPROB_FEATURES} == _named(s)


# --------------------------------------------------------------------------- records


def _records(with_summary: bool) -> list[Record]:
    s = LogprobSummary(mean=-0.5, min=-2.0, p10=-1.5, p25=-1.0, final_mean=-0.7, final_min=-0.9)
    cols = s.columns() if with_summary else {}
    return [Record("p1", "q", "a", "A: 1", 1.0, 3, 2, 0.1, **cols),  # type: ignore[arg-type]
            Record("p1", "q", "b", "A: 2", 0.0, 3, 2, 0.2, logprob_mean=-1.0),
            Record("p2", "q2", "a", "", 1.0, 3, 0, 0.1),
            Record("p2", "q2", "b", "x", 1.0, 3, 1, 0.2)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".csv.gz", ".jsonl.gz"])
def test_summary_columns_round_trip(tmp_path: Path, suffix: str) -> None:
    recs = _records(True)
    write_records(recs, tmp_path / f"r{suffix}")
    back = read_records(tmp_path / f"r{suffix}")
    assert back == recs
    assert back[0].logprobs == LogprobSummary(-0.5, -2.0, -1.5, -1.0, -0.7, -0.9)
    assert back[1].logprobs == LogprobSummary(mean=-1.0) and back[2].logprobs is None
    o = Outcomes.from_records(back)
    assert o.logprobs.shape == (2, 2, len(LOGPROB_STATS))
    np.testing.assert_array_equal(o.logprobs[0, 0], [-0.5, -2.0, -1.5, -1.0, -0.7, -0.9])
    assert o.logprob_mean[0, 1] == -1.0 and np.isnan(o.logprobs[0, 1, 1:]).all() and np.isnan(o.logprobs[1]).all()
    assert o.to_records() == back
    np.testing.assert_array_equal(o.subset([0]).logprobs, o.logprobs[:1])
    np.testing.assert_array_equal(o.select_models(["b"]).logprobs[:, 0], o.logprobs[:, 1])


def test_old_files_with_the_mean_alone_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text("prompt_id,prompt,model,response,correct,input_tokens,output_tokens,cost_usd,logprob_mean\n"
                    "p,q,a,r,1,1,1,0.1,-0.3\np,q,b,r,0,1,1,0.1,\n", encoding="utf-8")
    o = Outcomes.load(path)
    assert o.logprob_mean[0, 0] == -0.3 and np.isnan(o.logprobs[0, 0, 1:]).all() and np.isnan(o.logprobs[0, 1]).all()


@pytest.mark.parametrize(
    ("extra_header", "extra_cells", "needle"),
    [
        ("logprob_min", "0.5", "log-probability must be <= 0"),
        ("logprob_mean", "0.2", "log-probability must be <= 0"),
        ("logprob_min", "-1.0", "needs its mean"),
    ],
)
def test_bad_summary_cells_name_line_and_column(tmp_path: Path, extra_header: str, extra_cells: str,
                                                needle: str) -> None:
    from crescade import RecordsError

    path = tmp_path / "bad.csv"
    path.write_text(f"prompt_id,prompt,model,response,correct,input_tokens,output_tokens,cost_usd,{extra_header}\n"
                    f"p,q,a,r,1,1,1,0.1,{extra_cells}\n", encoding="utf-8")
    with pytest.raises(RecordsError, match=needle) as e:
        read_records(path)
    assert "line 2" in str(e.value) and "column" in str(e.value)


# --------------------------------------------------------------------------- artifacts


def test_an_artifact_saved_before_the_summary_still_loads_and_scores_as_before(tmp_path: Path,
                                                                              train: Outcomes) -> None:
    """An artifact of the previous format (its QE reads ``has_logprob``/``logprob_mean`` and none of the
    later features, and read an absent mean as 0) loads, and scores every answer exactly as it did."""
    from synthetic_records import make_cascade

    from crescade.engine.cascade import ARTIFACT_KIND
    from crescade.engine.features import FEATURE_NAMES
    from crescade.engine.store import load_artifact, save_artifact

    c = make_cascade(max_depth=2, quality_target=0.99).fit(train)
    c.save(tmp_path / "new")
    meta, arrays = load_artifact(tmp_path / "new", kind=ARTIFACT_KIND)
    d_old = len(FEATURE_NAMES) + 11  # the feature list before the summary: ... "text_logit"
    assert meta["qe"]["features"][d_old - 1] == "text_logit"
    meta["qe"] = {k: v for k, v in meta["qe"].items() if k != "missing"}
    meta["qe"]["features"] = meta["qe"]["features"][:d_old]
    rng = np.random.default_rng(1)
    old_w = {k: arrays[k][:d_old].copy() for k in ("qe_mean", "qe_scale", "qe_coef")}
    old_w["qe_coef"][len(FEATURE_NAMES) + 4] = 0.7  # the old estimator did weigh the mean logprob
    old_w["qe_mean"] += rng.normal(0, 0.01, d_old)
    save_artifact(tmp_path / "old", kind=ARTIFACT_KIND, meta=meta, arrays={**arrays, **old_w})

    old = type(c).load(tmp_path / "old")

    def by_hand(query: str, answer: Answer, k: int) -> float:  # the old estimator's own arithmetic
        from crescade.engine.features import answer_features, final_answer
        from crescade.engine.stage2 import extra_features

        j = old.models_.index(answer.model)
        fa = final_answer(answer.text)
        x = np.array(answer_features(query, answer.text) + extra_features(
            prior=float(old.acc_table_[k, j]), global_prior=float(old.global_acc_[j]),
            answer_logfreq=old.answer_tables_[(k, j)].logfreq(fa), logprobs=answer.logprobs, final=fa,
            history=[], text_logit=float(old.text_.score([answer.text])[0])))[:d_old]
        x = np.where(np.isnan(x), 0.0, x)
        z = ((x - old_w["qe_mean"]) / old_w["qe_scale"]) @ old_w["qe_coef"] + float(meta["qe"]["intercept"])
        return float(1 / (1 + np.exp(-z)))

    query = train.prompts[0]
    plan = old.plan(query)
    assert len(plan.ladder) > 1
    for lp in (None, LogprobSummary(mean=-0.2), LogprobSummary(-1.5, -4.0, -3.0, -2.0, -1.0, -1.2)):
        ans = Answer(train.responses[0][0], plan.ladder[0], logprobs=lp)
        assert old.judge(query, ans, plan=plan, tier=0).p == pytest.approx(by_hand(query, ans, plan.cluster),
                                                                           rel=1e-9)
