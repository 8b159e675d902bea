"""The live suite: real llama.cpp servers (``crescade.tools.local.LocalServers``) behind both adapters.

Opt-in: the default ``python -m pytest -q`` does not collect this directory at all (nothing is reported
as skipped); run it with ``python -m pytest -q --live tests/live``. Needs llama-cpp-python 0.3.36 and the
SmolLM2-135M and Qwen2.5-Coder-0.5B GGUFs (``crescade local install --models smollm2-135m
qwen2.5-coder-0.5b``); when they are missing every test errors out saying so -- nothing is skipped.
Everything stays on 127.0.0.1: no test touches the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_support import CHEAP, DROPPED, INSTALL_HINT, LIVE_MODELS, is_alive

from crescade import Cascade, Outcomes, local
from crescade.engine.pricing import ModelCard
from crescade.engine.records import read_records
from crescade.tools.cli import find_default_records
from crescade.tools.local import LocalServers

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--live", action="store_true", default=False,
                     help="run the live suite in tests/live (real llama.cpp servers; see tests/live/conftest.py)")


def _live(config: pytest.Config) -> bool:
    return bool(config.getoption("--live", default=False))


def pytest_configure(config: pytest.Config) -> None:
    named = [a for a in config.args if Path(a.split("::")[0]).resolve().is_relative_to(HERE)]
    if named and not _live(config):
        raise pytest.UsageError(f"{named[0]} is the live suite: run it with 'python -m pytest --live tests/live'")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without ``--live`` the live test modules are not collected (so they are not reported as skipped)."""
    if not _live(config) and collection_path.name.startswith("test_") and collection_path.parent == HERE:
        return True
    return None


def missing_requirements() -> str | None:
    """Why the live suite cannot run here, or None."""
    got = local.runtime_version()
    if got != local.RUNTIME_VERSION:
        return (f"llama-cpp-python {local.RUNTIME_VERSION} with its server extras is not importable "
                f"(found {got}); run '{INSTALL_HINT}'")
    bad = [n for n in LIVE_MODELS if not local.verify_model(n)]
    if bad:
        return (f"model(s) {', '.join(bad)} missing or not verified in {local.default_cache_dir()}; "
                f"run '{INSTALL_HINT}'")
    return None


@pytest.fixture(scope="session", autouse=True)
def live_ready() -> None:
    """Fail (never skip) every live test when the runtime or a model is missing."""
    reason = missing_requirements()
    if reason:
        pytest.fail(f"live suite cannot run: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def prices() -> dict[str, ModelCard]:
    return local.proxy_prices(LIVE_MODELS)


@pytest.fixture(scope="session")
def cascade() -> Cascade:
    """Fitted on the shipped recorded run of the local models, then cut down to the CI pool.

    The cheap tier starts every ladder (``start_model``), so each call is SmolLM2 -> Qwen-0.5B; clusters
    are chosen from 1 or 2 (the provisional record file is too small for 2 feasible clusters). Fitted on
    the ``train`` split, or on every prompt when the split has fewer than the 10 prompts a fit needs.
    """
    path, _ = find_default_records()
    outcomes = Outcomes.from_records(read_records(path))
    missing = [m for m in (*LIVE_MODELS, DROPPED) if m not in outcomes.models]
    assert not missing, f"{path} has no records of {missing}: not the recorded run of the local models"
    train = outcomes.split("train")
    fitted = Cascade(n_clusters="auto", cluster_grid=(1, 2), n_folds=3, max_depth=2, start_model=CHEAP,
                     progress=False).fit(train if train.n_prompts >= 10 else outcomes, local.proxy_prices(
                         outcomes.models))
    small = fitted.remove_model(DROPPED)
    assert set(small.models_) == set(LIVE_MODELS)
    ladders = {tuple(small.models_[j] for j in ladder) for ladder in small.ladders_}
    assert ladders == {LIVE_MODELS}, f"expected every ladder to be {LIVE_MODELS}, got {ladders}"
    return small


@pytest.fixture(scope="session")
def servers() -> Iterator[LocalServers]:
    """One real ``llama_cpp.server`` per CI model for the whole session; their PIDs must be gone after."""
    with LocalServers(LIVE_MODELS, timeout=120) as s:
        pids = [s.pid(n) for n in LIVE_MODELS]
        yield s
    alive = [p for p in pids if is_alive(p)]
    assert not alive, f"llama_cpp.server process(es) {alive} still running after LocalServers exited"
