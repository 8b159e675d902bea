"""Tests of the ``crescade`` command line, run in-process on a small synthetic record file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crescade import ModelCard, Record, __version__, write_records
from crescade.engine.pricing import save_prices
from crescade.tools.cli import find_default_records, main

TOPICS = {
    "algebra": ["equation", "variable", "polynomial", "quadratic", "matrix", "vector", "integer",
                "fraction", "exponent", "logarithm", "root", "factor", "derivative", "integral"],
    "history": ["empire", "dynasty", "treaty", "revolution", "monarch", "parliament", "colony",
                "crusade", "medieval", "renaissance", "pharaoh", "senate", "republic", "armada"],
}
MODELS = {"small": (0.9, 0.3), "medium": (0.9, 0.7), "large": (0.95, 0.93)}  # accuracy per topic
PRICES = {"small": 1.0, "medium": 4.0, "large": 20.0}  # $ per million tokens, input and output alike
N_PROMPTS, N_TRAIN = 120, 80


def make_records(*, split: bool = True) -> list[Record]:
    """3 models x 120 prompts in two topics; the first 80 prompts are ``train``, the rest ``test``."""
    rng = np.random.default_rng(7)
    names = list(TOPICS)
    recs = []
    for i in range(N_PROMPTS):
        t = i % 2
        words = rng.choice(TOPICS[names[t]], size=6, replace=False)
        prompt = f"Which {' '.join(words[:4])} fits? (A) {words[4]} (B) {words[5]}"
        gold = "AB"[int(rng.integers(2))]
        for model, acc in MODELS.items():
            ok = bool(rng.random() < acc[t])
            text = gold if ok else ("I am not sure, maybe " + ("B" if gold == "A" else "A"))
            n_in, n_out = len(prompt) // 4, max(1, len(text) // 4)
            recs.append(Record(
                prompt_id=f"q{i:03d}", prompt=prompt, model=model, response=text, correct=float(ok),
                input_tokens=n_in, output_tokens=n_out, cost_usd=(n_in + n_out) * PRICES[model] / 1e6,
                task=names[t], split=("train" if i < N_TRAIN else "test") if split else None))
    return recs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The records, their prices and a cascade calibrated on them by the CLI (once per module)."""
    d = tmp_path_factory.mktemp("cli")
    records = d / "records.csv.gz"
    write_records(make_records(), records)
    prices = d / "prices.json"
    save_prices({m: ModelCard(m, p, p) for m, p in PRICES.items()}, prices)
    artifact = d / "cascade"
    assert main(["calibrate", str(records), "--clusters", "2", "-q", "-o", str(artifact)]) == 0
    return {"dir": d, "records": records, "prices": prices, "artifact": artifact}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> str:
    """Exit 2, one ``crescade: error:`` line on stderr naming every fragment, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("crescade: error: "), err
    for f in fragments:
        assert f in lines[0], (f, err)
    return lines[0]


# --------------------------------------------------------------------------- calibrate / route / report


def test_calibrate_prints_expectations_and_saves(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    out_dir = tmp_path / "c"
    code, out, err = run(capsys, "calibrate", data["records"], "--prices", data["prices"], "--clusters", "2",
                         "--cost-target", "0.5", "-o", out_dir, "-q")
    assert code == 0, err
    assert (out_dir / "manifest.json").is_file()
    assert f"calibrated on {N_TRAIN} prompts (split 'train') x 3 models; 2 clusters" in out
    assert "target: spend at most 50.0% of always-large:" in out
    for label in ("accuracy", "retention", "cost ratio", "escalation rate", "strong-call share", "plan family"):
        assert f"  {label} " in out
    assert f"saved the cascade to {out_dir}" in out
    assert "Traceback" not in err
    code, out, err = run(capsys, "route", out_dir, "quadratic equation", "--json")  # a priced artifact loads
    assert code == 0, err
    assert json.loads(out)["ladder"]


def test_calibrate_split_choice(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:
    nosplit = tmp_path / "nosplit.jsonl"
    write_records(make_records(split=False), nosplit)
    code, out, err = run(capsys, "calibrate", nosplit, "--clusters", "1", "--max-depth", "1", "-q",
                         "-o", tmp_path / "a")
    assert code == 0, err
    assert f"calibrated on {N_PROMPTS} prompts (all prompts (no 'train' split))" in out
    code, out, err = run(capsys, "-q", "calibrate", data["records"], "--split", "test", "--clusters", "1",
                         "--max-depth", "1", "-o", tmp_path / "b")
    assert code == 0, err
    assert f"calibrated on {N_PROMPTS - N_TRAIN} prompts (split 'test')" in out
    code, _, err = run(capsys, "calibrate", data["records"], "--split", "dev", "-o", tmp_path / "c")
    assert_user_error(code, err, "'dev'", "'test', 'train'", "--split all")


def test_route_text_and_json(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    query = "Which treaty ended the revolution of the empire?"
    code, out, err = run(capsys, "route", data["artifact"], query)
    assert code == 0, err
    for label in ("cluster:", "ladder:", "tier 0:", "reason:", "expected in this cluster: accuracy"):
        assert label in out
    code, out, err = run(capsys, "route", data["artifact"], query, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["query"] == query
    assert plan["cluster"] in (0, 1)
    assert set(plan["ladder"]) <= set(MODELS) and plan["ladder"]
    assert len(plan["thresholds"]) == len(plan["ladder"]) and plan["thresholds"][-1] == 0.0
    assert plan["reason"]
    stats = plan["cluster_stats"]
    assert stats["cluster"] == plan["cluster"] and stats["size"] > 0
    assert 0.0 <= stats["expected_accuracy"] <= 1.0
    monkeypatch.setattr("sys.stdin", io.StringIO(query + "\n"))
    code, out, err = run(capsys, "route", data["artifact"], "-", "--json")
    assert code == 0, err
    assert json.loads(out) == plan


def test_report_examples_from_records_or_ids(data: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "report", data["artifact"], "--records", data["records"])
    assert code == 0, err
    assert out.count("\ncluster ") == 2
    for label in ("routed to", "ladder", "threshold", "accuracy", "cost $", "escalation", "e.g. 'Which"):
        assert label in out
    code, out, err = run(capsys, "report", data["artifact"], "--json", "--examples", "2")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["n_clusters"] == 2 and rep["calibration_prompts"] == N_TRAIN
    assert sorted(rep["models"]) == sorted(MODELS) and rep["strongest_model"] == "large"
    assert sum(c["size"] for c in rep["clusters"]) == N_TRAIN
    for c in rep["clusters"]:
        assert c["ladder"][0] == c["routed_model"]
        assert {"threshold", "expected_accuracy", "expected_cost_per_query_usd",
                "expected_escalation_rate"} <= set(c)
        assert 1 <= len(c["examples"]) <= 2
        assert all(e["prompt"] is None and e["prompt_id"].startswith("q") for e in c["examples"])
    code, out, err = run(capsys, "report", data["artifact"])
    assert code == 0, err
    assert "e.g. prompt id q" in out


# --------------------------------------------------------------------------- evaluate / demo


def test_evaluate_writes_json_and_png(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    js, png = tmp_path / "out" / "eval.json", tmp_path / "plots" / "eval.png"  # directories made on demand
    code, out, err = run(capsys, "evaluate", data["records"], "--prices", data["prices"], "--bootstrap", "50",
                         "--clusters", "2", "--json", js, "--plot", png, "-q")
    assert code == 0, err
    assert f"wrote {js}" in out and f"wrote {png}" in out
    umask = os.umask(0)
    os.umask(umask)
    assert js.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not a private temp file
    rep = json.loads(js.read_text())
    names = [p["name"] for p in rep["policies"]]
    assert {"crescade", "stage1-only", "knn", "oracle", *MODELS} <= set(names)
    assert rep["meta"]["n_train"] == N_TRAIN and rep["meta"]["n_test"] == N_PROMPTS - N_TRAIN
    assert all(name in out for name in names)  # the table has a row per policy
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_needs_train_and_test(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    nosplit = tmp_path / "nosplit.csv"
    write_records(make_records(split=False), nosplit)
    code, _, err = run(capsys, "evaluate", nosplit)
    assert_user_error(code, err, str(nosplit), "'train' and 'test'")


def test_demo_on_given_records(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    code, out, err = run(capsys, "demo", "--records", data["records"], "--out", out_dir, "--bootstrap", "20",
                         "--clusters", "2", "-q")
    assert code == 0, err
    assert (out_dir / "report.json").is_file()
    assert (out_dir / "cost-quality.png").read_bytes()[:4] == b"\x89PNG"
    assert (out_dir / "cascade" / "manifest.json").is_file()
    assert str(out_dir / "report.json") in out and str(out_dir / "cascade") in out
    code, out, err = run(capsys, "route", out_dir / "cascade", "polynomial root", "--json")
    assert code == 0 and json.loads(out)["ladder"], err


def test_default_records_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import crescade.tools.cli as cli

    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "routerbench-3task.csv.gz").write_bytes(b"")
    deep = tmp_path / "repo" / "sub"
    deep.mkdir(parents=True)
    packaged = cli.importlib.resources.files("crescade").joinpath(cli.DEFAULT_RECORDS_RESOURCE).is_file()
    path, _ = find_default_records(deep)
    if not packaged:
        assert path == shared / "routerbench-3task.csv.gz"
        monkeypatch.setattr(cli, "SHARED_RECORDS", Path("shared") / "data" / "no-such-file.csv.gz")
        with pytest.raises(cli.CLIError, match="--records PATH"):
            find_default_records(deep)
        code, _, err = run(capsys, "demo", "--out", tmp_path / "d")
        assert_user_error(code, err, "--records PATH")


# --------------------------------------------------------------------------- user errors


def test_missing_records_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    code, _, err = run(capsys, "calibrate", missing, "-o", tmp_path / "x")
    assert_user_error(code, err, str(missing))
    code, _, err = run(capsys, "evaluate", missing)
    assert_user_error(code, err, str(missing))
    code, _, err = run(capsys, "calibrate", missing, "--prices", tmp_path / "p.json", "-o", tmp_path / "x")
    assert_user_error(code, err, "p.json")


def test_bad_records_file_names_file_and_line(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    write_records(make_records()[:9], bad)
    lines = bad.read_text().splitlines()
    old = ",1.0," if ",1.0," in lines[4] else ",0.0,"
    lines[4] = lines[4].replace(old, ",yes,", 1)
    bad.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, "calibrate", bad, "-o", tmp_path / "x")
    assert_user_error(code, err, str(bad), "line 5", "'correct'")


def test_incomplete_records_hint_and_drop(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "incomplete.csv"
    write_records(make_records()[:-1], path)  # the last prompt lacks one model
    code, _, err = run(capsys, "calibrate", path, "-o", tmp_path / "x")
    assert_user_error(code, err, "--drop-incomplete")
    code, _, err = run(capsys, "calibrate", path, "--drop-incomplete", "--clusters", "1", "--max-depth", "1",
                       "-q", "-o", tmp_path / "x")
    assert code == 0, err
    assert "crescade: warning: " in err and "dropped 1 of 120" in err and "Traceback" not in err


def test_unknown_model_in_prices(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                 tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    save_prices({"small": ModelCard("small", 1.0, 1.0), "large": ModelCard("large", 20.0, 20.0)}, prices)
    code, _, err = run(capsys, "calibrate", data["records"], "--prices", prices, "-o", tmp_path / "x")
    assert_user_error(code, err, "'medium'", "no price")


def test_usage_errors_are_one_line(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    code, _, err = run(capsys, "calibrate", data["records"], "--quality-target", "0.9",
                       "--cost-target", "0.3", "-o", tmp_path / "x")
    assert_user_error(code, err, "--cost-target", "not allowed with")
    code, _, err = run(capsys, "calibrate", data["records"], "--clusters", "many", "-o", tmp_path / "x")
    assert_user_error(code, err, "'many'")
    code, _, err = run(capsys, "calibrate", data["records"])
    assert_user_error(code, err, "-o/--out")
    code, _, err = run(capsys)
    assert_user_error(code, err, "COMMAND")
    code, _, err = run(capsys, "calibrate", data["records"], "--quality-target", "3", "-o", tmp_path / "x")
    assert_user_error(code, err, "--quality-target", "(0, 1]")


def test_artifact_missing_or_corrupt(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    missing = tmp_path / "none"
    for argv in (("route", missing, "q"), ("report", missing)):
        code, _, err = run(capsys, *argv)
        assert_user_error(code, err, str(missing))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in data["artifact"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    meta = broken / "meta.json"
    meta.write_bytes(meta.read_bytes().replace(b'"models"', b'"modelz"', 1))
    code, _, err = run(capsys, "route", broken, "q")
    assert_user_error(code, err, "meta.json")
    code, _, err = run(capsys, "report", tmp_path / "nope.csv")  # a file path, not a directory
    assert_user_error(code, err)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"crescade {__version__}"
    proc = subprocess.run([sys.executable, "-m", "crescade", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"crescade {__version__}"


@pytest.mark.parametrize("value", ["1.5", "0", "-0.2", "nan"])
def test_quality_target_out_of_range_is_a_usage_error(data: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, value: str) -> None:
    code, _, err = run(capsys, "calibrate", data["records"], "--quality-target", value, "-o", tmp_path / "c", "-q")
    assert_user_error(code, err, "--quality-target", repr(value))
    assert not (tmp_path / "c").exists()
