"""The CLI under hostile input: empty or undecodable queries and damaged files are one clear line on stderr
and exit code 2, never a traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crescade import Cascade
from crescade.tools.cli import main


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, cascade: Cascade) -> Path:
    path = tmp_path_factory.mktemp("cli") / "cascade"
    cascade.save(path)
    return path


@pytest.mark.parametrize(("query", "message"), [("", "nothing to answer"), ("   ", "nothing to answer"),
                                                ("bad \udcff byte", "lone surrogate")])
def test_route_refuses_unroutable_queries(artifact: Path, capsys: pytest.CaptureFixture[str], query: str,
                                          message: str) -> None:
    assert main(["route", str(artifact), query]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_route_refuses_stdin_that_is_not_utf8(artifact: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    class Stdin(io.TextIOWrapper):
        pass

    monkeypatch.setattr(sys, "stdin", Stdin(io.BytesIO(b"which river \xff\xfe?")))
    assert main(["route", str(artifact), "-"]) == 2
    assert "standard input is not UTF-8 text" in capsys.readouterr().err


def test_undecodable_argv_bytes_from_a_real_shell(artifact: Path) -> None:
    """A terminal in a non-UTF-8 locale passes raw bytes: Python turns them into lone surrogates."""
    proc = subprocess.run([sys.executable, "-m", "crescade", "route", os.fsencode(str(artifact)),
                           b"which river \xff?"], capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert b"lone surrogate" in proc.stderr and b"Traceback" not in proc.stderr


def test_damaged_artifact_and_records_are_one_line_each(artifact: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in artifact.iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:-7])
    assert main(["route", str(bad), "which river?"]) == 2
    records = tmp_path / "r.jsonl"
    records.write_bytes(b'{"prompt_id": "a", "prompt": [' * 3000 + b"\n")
    assert main(["report", str(artifact), "--records", str(records)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "manifest.json: invalid JSON" in err[0] and "nested too deeply" in err[1]
