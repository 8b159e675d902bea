"""Fixtures over the shared synthetic data of ``synthetic_records`` (three topics, three models).

The helpers live in ``synthetic_records`` rather than here because pytest imports every ``conftest.py``
outside a package as the module ``conftest``: a subdirectory's conftest replaces this one in
``sys.modules``, so ``from conftest import ...`` in a test module would find the wrong file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from synthetic_records import ACCURACY, MODELS, PRICE_PER_MTOK, card, make_cascade, make_prompts, make_records

from crescade import Cascade, ModelCard, Outcomes, Record
from crescade.serving.reliability import SHARED_COOLDOWNS


@pytest.fixture(scope="session")
def prompts() -> list[tuple[str, str, str, str]]:
    return make_prompts()


@pytest.fixture(scope="session")
def records(prompts: list[tuple[str, str, str, str]]) -> list[Record]:
    recs: list[Record] = []
    for s, m in enumerate(MODELS):
        recs += make_records(m, ACCURACY[m], PRICE_PER_MTOK[m], prompts, seed=100 + s)
    return recs


@pytest.fixture(scope="session")
def outcomes(records: list[Record]) -> Outcomes:
    return Outcomes.from_records(records)


@pytest.fixture(scope="session")
def train(outcomes: Outcomes) -> Outcomes:
    return outcomes.split("train")


@pytest.fixture(scope="session")
def test_set(outcomes: Outcomes) -> Outcomes:
    return outcomes.split("test")


@pytest.fixture(scope="session")
def prices() -> dict[str, ModelCard]:
    return {m: card(m, p) for m, p in PRICE_PER_MTOK.items()}


@pytest.fixture(scope="session")
def cascade(train: Outcomes) -> Cascade:
    """Fitted on the train split (3 clusters, depth 2, 95% of the strongest model's accuracy).

    Shared by many tests: they must only use methods that return copies (retarget, add/remove_model).
    """
    return make_cascade().fit(train)


@pytest.fixture(autouse=True)
def _fresh_shared_cooldowns() -> Iterator[None]:
    """A rate limit one test provokes must not make another test's cascade skip that model."""
    yield
    SHARED_COOLDOWNS.clear()
