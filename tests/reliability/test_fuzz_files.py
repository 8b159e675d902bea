"""10,000 mutated and truncated record files and 10,000 damaged artifacts (half of them resealed with
valid checksums): only crescade's own exceptions come out, nothing hangs, no pickled code runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz import fuzz_artifacts, fuzz_records

from crescade import Cascade, ModelCard, Record

N = 10_000


def test_the_record_reader_survives_10000_damaged_files(records: list[Record], prices: dict[str, ModelCard],
                                                        tmp_path: Path) -> None:
    few = [r for r in records if int(r.prompt_id[1:]) < 40]  # 40 prompts x 3 models: a small file
    res = fuzz_records(few, prices, tmp_path, N, seed=1)
    assert res.escaped == [] and res.slow == []
    assert res.inputs == N and res.rejected["RecordsError"] > N // 2 and res.accepted > 0


def test_the_artifact_loader_survives_10000_damaged_artifacts(cascade: Cascade, tmp_path: Path) -> None:
    res = fuzz_artifacts(cascade, tmp_path, N, seed=2)
    assert res.escaped == [] and res.slow == []
    assert not res.code_ran, "unpickling an object array ran code"
    assert res.inputs == N and res.rejected["ArtifactError"] > N // 2


@pytest.mark.parametrize("name", ["meta.json", "arrays.npz", "manifest.json"])
def test_a_single_flipped_bit_anywhere_is_an_artifact_error(cascade: Cascade, tmp_path: Path, name: str) -> None:
    from crescade.common.errors import ArtifactError

    cascade.save(tmp_path / "a")
    path = tmp_path / "a" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        Cascade.load(tmp_path / "a")
