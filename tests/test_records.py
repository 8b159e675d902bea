"""Tests of crescade.engine.records: reading, validating and writing record files, and the Outcomes matrix."""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from crescade.common.errors import ConfigError, PoolError, RecordsError
from crescade.engine.pricing import ModelCard, load_prices
from crescade.engine.records import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    Outcomes,
    Record,
    read_records,
    write_records,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADER = ["prompt_id", "task", "split", "prompt", "model", "response", "correct",
          "input_tokens", "output_tokens", "cost_usd"]
PRICES = {"a": ModelCard("a", 1.0, 2.0), "b": ModelCard("b", 10.0, 30.0)}


def _row(pid: str = "p1", mdl: str = "a", /, **kw: str) -> list[str]:
    vals = {"prompt_id": pid, "task": "t", "split": "train", "prompt": f"prompt {pid}", "model": mdl,
            "response": "ok", "correct": "1", "input_tokens": "10", "output_tokens": "2", "cost_usd": "0.001"}
    vals.update(kw)
    return [vals[c] for c in HEADER]


def _csv(tmp_path: Path, rows: list[list[str]], header: list[str] = HEADER, name: str = "r.csv") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path = tmp_path / name
    data = buf.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def _good_rows() -> list[list[str]]:
    return [_row("p1", "a"), _row("p1", "b", correct="0"), _row("p2", "a"), _row("p2", "b")]


def _err(path: Path, **kw: object) -> str:
    with pytest.raises(RecordsError) as ei:
        read_records(path, **kw)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert str(path) in msg
    return msg.replace(str(path), "<path>")  # the tmp path holds the test's name: keep it out of checks


def _full_records() -> list[Record]:
    return [
        Record("p1", "What is 2+2?\nAnswer, \"briefly\".", "a", "4", 1.0, 12, 1, 1.4e-05,
               task="math", split="train", latency_s=0.5, ttft_s=0.1, tpot_s=0.01,
               logprob_mean=-0.25, finish_reason="stop"),
        Record("p1", "What is 2+2?\nAnswer, \"briefly\".", "b", "", 0.0, 12, 0, 0.00012,
               task="math", split="train"),
        Record("p2", "Ünïcødé ☃ line\r\nbreak\rcr", "a", "résumé,\n\"quoted\"\r\n", 0.5, 7, 3,
               0.1 + 0.2, task=None, split="test", finish_reason="length"),
        Record("p2", "Ünïcødé ☃ line\r\nbreak\rcr", "b", " spaced ", 1.0, 7, 30, 0.0, split="test",
               logprob_mean=-1e-300),
    ]


# --------------------------------------------------------------------------- reading good files


def test_read_csv_basic(tmp_path: Path) -> None:
    recs = read_records(_csv(tmp_path, _good_rows()))
    assert len(recs) == 4
    r = recs[1]
    assert (r.prompt_id, r.model, r.correct, r.input_tokens, r.output_tokens) == ("p1", "b", 0.0, 10, 2)
    assert r.task == "t" and r.split == "train" and r.latency_s is None and r.finish_reason is None


def test_record_fields_match_columns() -> None:
    from dataclasses import fields

    assert [f.name for f in fields(Record)] == list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)


@pytest.mark.parametrize("name", ["r.csv", "r.csv.gz", "r.jsonl", "r.jsonl.gz"])
def test_round_trip_exact(tmp_path: Path, name: str) -> None:
    recs = _full_records()
    path = tmp_path / name
    write_records(recs, path)
    assert read_records(path) == recs
    assert [p.name for p in tmp_path.iterdir()] == [name]  # atomic write leaves no temp file
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_write_then_read_omits_unused_optional_columns(tmp_path: Path) -> None:
    recs = [Record("p", "q", "a", "r", 1.0, 1, 1, 0.5)]
    path = tmp_path / "r.csv"
    write_records(recs, path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["prompt_id", "prompt", "model", "response", "correct", "input_tokens",
                      "output_tokens", "cost_usd"]
    assert read_records(path) == recs


def test_write_rejects_invalid_record(tmp_path: Path) -> None:
    bad = Record("p", "q", "a", "r", 2.0, 1, 1, 0.5)
    with pytest.raises(RecordsError, match="correct"):
        write_records([bad], tmp_path / "r.csv")
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_duplicates_and_inconsistent_prompts(tmp_path: Path) -> None:
    r = Record("p", "q", "a", "r", 1.0, 1, 1, 0.5)
    with pytest.raises(RecordsError, match="duplicate"):
        write_records([r, r], tmp_path / "r.jsonl")
    with pytest.raises(RecordsError, match="prompt text"):
        write_records([r, Record("p", "other", "b", "r", 1.0, 1, 1, 0.5)], tmp_path / "r.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_gzip_sniffed_regardless_of_suffix(tmp_path: Path) -> None:
    plain = _csv(tmp_path, _good_rows(), name="plain.csv")
    gz_named_plain = tmp_path / "x.csv.gz"
    gz_named_plain.write_bytes(plain.read_bytes())
    plain_named_gz = tmp_path / "y.csv"
    plain_named_gz.write_bytes(gzip.compress(plain.read_bytes()))
    expected = read_records(plain)
    assert read_records(gz_named_plain) == expected
    assert read_records(plain_named_gz) == expected


def test_extra_columns_ignored_and_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    text = "\ufeffextra,prompt_id,prompt,model,response,correct,input_tokens,output_tokens,cost_usd\r\n"
    text += "zz,p1,hi,a,,1,3,0,0.5\r\n\r\nzz,p1,hi,b,,0.0,3,0,0.25\r\n"
    path.write_text(text, encoding="utf-8")
    recs = read_records(path)
    assert [r.model for r in recs] == ["a", "b"]
    assert recs[0].response == "" and recs[0].task is None


def test_integral_float_tokens_accepted(tmp_path: Path) -> None:
    recs = read_records(_csv(tmp_path, [_row(input_tokens="12.0")]))
    assert recs[0].input_tokens == 12 and isinstance(recs[0].input_tokens, int)


def test_empty_cost_computed_from_prices(tmp_path: Path) -> None:
    rows = [_row("p1", "a", cost_usd="", input_tokens="1000", output_tokens="500"),
            _row("p1", "b", cost_usd="0.7")]
    recs = read_records(_csv(tmp_path, rows), prices=PRICES)
    assert recs[0].cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert recs[1].cost_usd == 0.7


def test_jsonl_types(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [
        {"prompt_id": 7, "prompt": "q", "model": "a", "response": None, "correct": True,
         "input_tokens": 3, "output_tokens": 1.0, "cost_usd": 0.1, "latency_s": None, "other": [1]},
        {"prompt_id": 7, "prompt": "q", "model": "b", "response": "x", "correct": 0,
         "input_tokens": 3, "output_tokens": 2, "cost_usd": "0.2"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    recs = read_records(path)
    assert recs[0].prompt_id == "7" and recs[0].response == "" and recs[0].correct == 1.0
    assert recs[0].output_tokens == 1 and recs[1].cost_usd == 0.2


def test_incomplete_drop_warns(tmp_path: Path) -> None:
    rows = [*_good_rows(), _row("p3", "a")]
    path = _csv(tmp_path, rows)
    with pytest.warns(UserWarning, match="dropped 1 of 3"):
        recs = read_records(path, incomplete="drop")
    assert {r.prompt_id for r in recs} == {"p1", "p2"}


def test_bad_incomplete_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_records(_csv(tmp_path, _good_rows()), incomplete="keep")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad inputs (file, line, column)


def test_missing_required_columns(tmp_path: Path) -> None:
    header = [c for c in HEADER if c not in ("correct", "cost_usd")]
    path = _csv(tmp_path, [], header=header)
    msg = _err(path)
    assert "line 1" in msg and "correct" in msg and "cost_usd" in msg


def test_missing_required_columns_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt_id": "p", "prompt": "q", "model": "a"}) + "\n")
    msg = _err(path)
    assert "line 1" in msg and "response" in msg and "cost_usd" in msg


@pytest.mark.parametrize("content", [b"", b"\n\n", gzip.compress(b"")])
def test_empty_csv(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    assert "empty file" in _err(path)


def test_leading_blank_lines_before_header(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("\n" + ",".join(HEADER) + "\n" + ",".join(_row("p1", "a")) + "\n")
    assert len(read_records(path)) == 1
    path.write_text("\n" + ",".join(HEADER[:3]) + "\n")
    assert "line 2" in _err(path)


def test_header_only_and_empty_jsonl(tmp_path: Path) -> None:
    assert "empty" in _err(_csv(tmp_path, []))
    path = tmp_path / "r.jsonl"
    path.write_text("\n")
    assert "empty" in _err(path)


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("correct", "yes", "not a number"),
        ("correct", "1.5", "[0, 1]"),
        ("correct", "-0.1", "[0, 1]"),
        ("correct", "nan", "finite"),
        ("correct", "", "empty"),
        ("input_tokens", "1.5", "not an integer"),
        ("input_tokens", "ten", "not an integer"),
        ("output_tokens", "-3", ">= 0"),
        ("output_tokens", "", "empty"),
        ("cost_usd", "cheap", "not a number"),
        ("cost_usd", "-0.01", ">= 0"),
        ("cost_usd", "inf", "finite"),
        ("cost_usd", "", "no prices"),
        ("model", "", "empty model"),
        ("prompt_id", " ", "empty prompt_id"),
    ],
)
def test_bad_value_names_file_line_column(tmp_path: Path, column: str, value: str, needle: str) -> None:
    # A multi-line prompt before the bad row: the line is the physical line where the row starts.
    rows = [_row("p1", "a", prompt="two\nlines"), _row("p1", "b", prompt="two\nlines"),
            _row("p2", "a", **{column: value})]
    msg = _err(_csv(tmp_path, rows))
    assert "line 6" in msg and f"column {column!r}" in msg and needle in msg


def test_bad_value_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = {"prompt_id": "p", "prompt": "q", "model": "a", "response": "", "correct": 1,
            "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.1}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "model": "b", "input_tokens": -1}) + "\n")
    msg = _err(path)
    assert "line 3" in msg and "column 'input_tokens'" in msg


def test_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = _csv(tmp_path, [_row("p1", "a"), ["p1", "x"]])
    msg = _err(path)
    assert "line 3" in msg and "2 field(s)" in msg


def test_duplicate_pair_names_both_lines(tmp_path: Path) -> None:
    rows = [_row("p1", "a"), _row("p1", "b"), _row("p2", "a"), _row("p1", "a")]
    msg = _err(_csv(tmp_path, rows))
    assert "line 5" in msg and "column 'model'" in msg
    assert "first on line 2" in msg and "'p1'" in msg and "'a'" in msg


def test_same_prompt_id_different_text(tmp_path: Path) -> None:
    rows = [_row("p1", "a"), _row("p1", "b", prompt="something else")]
    msg = _err(_csv(tmp_path, rows))
    assert "line 3" in msg and "column 'prompt'" in msg and "line 2" in msg and "'p1'" in msg


def test_same_prompt_id_different_split(tmp_path: Path) -> None:
    rows = [_row("p1", "a"), _row("p1", "b", split="test")]
    msg = _err(_csv(tmp_path, rows))
    assert "line 3" in msg and "column 'split'" in msg


def test_model_without_price(tmp_path: Path) -> None:
    rows = [_row("p1", "a"), _row("p1", "zeta"), _row("p2", "a"), _row("p2", "zeta")]
    msg = _err(_csv(tmp_path, rows), prices=PRICES)
    assert "line 3" in msg and "column 'model'" in msg and "'zeta'" in msg
    assert "first on line 3" in msg and "a, b" in msg


def test_prompt_missing_models(tmp_path: Path) -> None:
    rows = [_row("p1", "a"), _row("p1", "b"), _row("p1", "c"), _row("p2", "b"), _row("p3", "a"),
            _row("p3", "b"), _row("p3", "c")]
    msg = _err(_csv(tmp_path, rows))
    assert "'p2'" in msg and "line 5" in msg and "column 'model'" in msg
    assert "a, c" in msg and "incomplete='drop'" in msg


def test_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    text = ",".join(HEADER) + "\n" + ",".join(_row("p1", "a")) + "\n"
    path.write_bytes(text.encode() + b"p1,t,train,prompt p1,b,caf\xe9,1,1,1,0.1\n")
    msg = _err(path)
    assert "line 3" in msg and "UTF-8" in msg


def test_text_lines_small_chunks() -> None:
    from crescade.engine.records import _text_lines

    text = "\ufeffa,é\r\n☃☃☃\n\nlong line without end ü"
    data = text.encode("utf-8")
    for size in (1, 2, 3, 5, 64):
        got = list(_text_lines(io.BytesIO(data), "x", chunk_size=size))
        assert got == ["a,é\r\n", "☃☃☃\n", "\n", "long line without end ü"]
    with pytest.raises(RecordsError, match="line 3"):
        list(_text_lines(io.BytesIO(b"a\nb\n\xff\n"), "x", chunk_size=2))


def test_truncated_gzip(tmp_path: Path) -> None:
    path = _csv(tmp_path, _good_rows() * 1, name="r.csv.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])
    assert "gzip" in _err(path)


def test_garbage_after_gzip_magic(tmp_path: Path) -> None:
    path = tmp_path / "r.csv.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    assert "gzip" in _err(path)


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt_id": "p"}\n'.replace(b"}", b"") + b"\n"))
    msg = _err(path)
    assert "line 1" in msg and "invalid JSON" in msg


def test_json_not_an_object_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("[1, 2]\n")
    assert "line 1" in _err(path)
    row = {"prompt_id": "p", "prompt": "q", "model": "a", "response": "", "correct": float("nan"),
           "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.1}
    path.write_text(json.dumps(row) + "\n")
    assert "line 1" in _err(path)


def test_unclosed_quote(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(HEADER) + '\np1,t,train,"never closed,a,x,1,1,1,0.1\n')
    msg = _err(path)
    assert "line 2" in msg


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    assert "cannot open" in _err(tmp_path / "missing.csv")
    other = tmp_path / "r.parquet"
    other.write_bytes(b"x")
    assert ".jsonl" in _err(other)


# --------------------------------------------------------------------------- Outcomes


def _outcomes() -> Outcomes:
    recs = [
        Record("q2", "second", "zeta", "z", 1.0, 5, 6, 0.3, split="test", task="t2", latency_s=1.5),
        Record("q2", "second", "alpha", "x", 0.0, 5, 1, 0.1, split="test", task="t2"),
        Record("q1", "first", "alpha", "y", 1.0, 3, 2, 0.2, split="train", finish_reason="stop"),
        Record("q1", "first", "zeta", "w", 0.5, 3, 4, 0.4, split="train"),
        Record("q3", "third", "alpha", "", 1.0, 1, 1, 0.0, split="train"),
        Record("q3", "third", "zeta", "", 0.0, 1, 1, 0.0, split="train"),
    ]
    return Outcomes.from_records(recs)


def test_outcomes_matrix() -> None:
    o = _outcomes()
    assert o.prompt_ids == ["q2", "q1", "q3"] and o.models == ["alpha", "zeta"]
    assert len(o) == o.n_prompts == 3 and o.n_models == 2
    np.testing.assert_array_equal(o.correct, [[0.0, 1.0], [1.0, 0.5], [1.0, 0.0]])
    assert o.cost.dtype == np.float64 and o.input_tokens.dtype == np.int64
    np.testing.assert_array_equal(o.output_tokens, [[1, 6], [2, 4], [1, 1]])
    assert o.responses[0] == ["x", "z"] and o.finish_reason[1] == ["stop", None]
    assert o.latency_s[0, 1] == 1.5 and np.isnan(o.latency_s[0, 0]) and np.isnan(o.logprob_mean).all()
    assert o.tasks == ["t2", None, None] and o.splits == ["test", "train", "train"]


def test_outcomes_to_records_round_trip(tmp_path: Path) -> None:
    o = _outcomes()
    again = Outcomes.from_records(o.to_records())
    for name in ("prompt_ids", "prompts", "tasks", "splits", "models", "responses", "finish_reason"):
        assert getattr(again, name) == getattr(o, name)
    for name in ("correct", "cost", "input_tokens", "output_tokens", "latency_s", "logprob_mean"):
        np.testing.assert_array_equal(getattr(again, name), getattr(o, name))
    path = tmp_path / "o.jsonl"
    write_records(o.to_records(), path)
    assert Outcomes.load(path).to_records() == o.to_records()


def test_outcomes_subset_and_split() -> None:
    o = _outcomes()
    s = o.subset(np.array([2, 0]))
    assert s.prompt_ids == ["q3", "q2"] and s.correct.shape == (2, 2)
    np.testing.assert_array_equal(s.cost[1], o.cost[0])
    m = o.subset(np.array([True, False, True]))
    assert m.prompt_ids == ["q2", "q3"]
    assert o.subset(np.array([], dtype=int)).n_prompts == 0
    s.responses[0][0] = "changed"
    assert o.responses[2][0] == ""  # subsets do not share mutable rows
    assert o.split("train").prompt_ids == ["q1", "q3"]
    with pytest.raises(ConfigError, match="'test', 'train'"):
        o.split("validation")
    with pytest.raises(ConfigError):
        o.subset(np.array([True]))
    with pytest.raises(ConfigError):
        o.subset(np.array([5]))
    with pytest.raises(ConfigError):
        o.subset(np.array([0.5]))


def test_outcomes_select_models() -> None:
    o = _outcomes()
    s = o.select_models(["zeta", "alpha"])
    assert s.models == ["zeta", "alpha"]
    np.testing.assert_array_equal(s.correct, o.correct[:, ::-1])
    assert s.responses[0] == ["z", "x"]
    with pytest.raises(PoolError, match="'nope'"):
        o.select_models(["alpha", "nope"])
    with pytest.raises(PoolError):
        o.select_models(["alpha", "alpha"])
    with pytest.raises(PoolError):
        o.select_models("alpha")


def test_outcomes_from_records_errors() -> None:
    r = Record("p", "q", "a", "", 1.0, 1, 1, 0.1)
    with pytest.raises(RecordsError, match="duplicate"):
        Outcomes.from_records([r, r])
    with pytest.raises(RecordsError, match="no records"):
        Outcomes.from_records([])
    other = Record("p", "different", "b", "", 1.0, 1, 1, 0.1)
    with pytest.raises(RecordsError, match="prompt text"):
        Outcomes.from_records([r, other])
    lone = Record("p2", "q2", "a", "", 1.0, 1, 1, 0.1)
    both = [r, Record("p", "q", "b", "", 1.0, 1, 1, 0.1), lone]
    with pytest.raises(RecordsError, match=r"'p2'.*missing model"):
        Outcomes.from_records(both)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Outcomes.from_records(both, incomplete="drop").prompt_ids == ["p"]


# --------------------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def prices() -> dict[str, ModelCard]:
    return load_prices(DATA / "prices.json")


def test_shared_gsm8k(prices: dict[str, ModelCard]) -> None:
    o = Outcomes.load(DATA / "routellm-gsm8k.csv.gz", prices=prices)
    assert (o.n_prompts, o.n_models) == (1319, 2)
    assert o.models == ["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert o.correct.mean(axis=0) == pytest.approx([0.857, 0.638], abs=1e-3)
    assert all(r for row in o.responses for r in row)
    card = prices["gpt-4-1106-preview"]
    n_in, n_out = o.input_tokens[:, 0], o.output_tokens[:, 0]
    expected = (card.input_per_mtok * n_in + card.output_per_mtok * n_out) / 1e6
    np.testing.assert_allclose(o.cost[:, 0], expected, rtol=1e-9)
    assert o.split("train").n_prompts + o.split("test").n_prompts == 1319


def test_shared_routerbench_incomplete() -> None:
    path = DATA / "routerbench-3task.csv.gz"
    with pytest.raises(RecordsError, match="8 of 3158 prompt"):
        read_records(path)
    with pytest.warns(UserWarning, match="dropped 8 of 3158"):
        o = Outcomes.load(path, incomplete="drop")
    assert (o.n_prompts, o.n_models) == (3150, 11)
    assert len(o.to_records()) == 3150 * 11
    assert np.isfinite(o.cost).all() and set(np.unique(o.correct)) <= {0.0, 1.0}


def test_usage_source_round_trips_and_unknown_values_are_rejected(tmp_path: Path) -> None:
    row = {"prompt_id": "p", "prompt": "q", "model": "m", "response": "a", "correct": 1, "input_tokens": 3,
           "output_tokens": 4, "cost_usd": 0.0, "usage_source": "estimate"}
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (rec,) = read_records(good)
    assert rec.usage_source == "estimate"
    write_records([rec], tmp_path / "again.jsonl")
    assert read_records(tmp_path / "again.jsonl")[0].usage_source == "estimate"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**row, "usage_source": "guess"}) + "\n", encoding="utf-8")
    with pytest.raises(RecordsError, match="usage_source") as info:
        read_records(bad)
    assert "provider" in str(info.value) and "line 1" in str(info.value)


def test_a_decompression_bomb_line_is_refused_without_reading_it_all(tmp_path) -> None:
    import gzip as _gzip

    from crescade.engine import records as records_module

    path = tmp_path / "bomb.jsonl.gz"
    with _gzip.open(path, "wb") as f:
        for _ in range(80):
            f.write(b"x" * (1 << 20))  # 80 MiB without a newline, a few hundred KiB on disk
    assert path.stat().st_size < 2 << 20
    with pytest.raises(RecordsError, match=r"line 1.*line longer than 67108864 bytes|longer than"):
        records_module.read_records(path)
