"""crescade: Cluster, Route, Escalate — a cost-aware LLM cascade.

The framework-free core, in layers (each imports only the ones before it): :mod:`crescade.common`
(errors, redaction, atomic writes), :mod:`crescade.engine` (records, prices, embeddings, the two stages,
the knob, the fitted cascade and its store), :mod:`crescade.serving` (the dispatch loop, reliability,
request checks), :mod:`crescade.evaluation` (replay, baselines, metrics) and :mod:`crescade.tools` (CLI,
collection, tasks, local models). The public names are re-exported here; the adapters
(``crescade_langchain``, ``crescade_llamaindex``) reach the core through :mod:`crescade.seam`.
"""

from ._version import __version__
from .common.errors import (
    AllTiersFailedError,
    ArtifactError,
    ConfigError,
    CrescadeError,
    InputError,
    MissingExtraError,
    ModelFileError,
    NotFittedError,
    PoolError,
    PricingError,
    RecordsError,
)
from .engine.cascade import Cascade, ReplayResult
from .engine.decisions import Answer, Plan, Verdict
from .engine.pricing import ModelCard, load_prices
from .engine.records import Outcomes, Record, read_records, write_records
from .serving.reliability import Cooldowns, Reliability, SpendGuard, SpendLimitError, TierTimeoutError
from .tools.collect import CollectReport, Example, acollect, collect, load_examples, save_examples
from .tools.graders import get_grader

__all__ = [
    "AllTiersFailedError",
    "Answer",
    "ArtifactError",
    "Cascade",
    "CollectReport",
    "ConfigError",
    "Cooldowns",
    "CrescadeError",
    "Example",
    "InputError",
    "MissingExtraError",
    "ModelCard",
    "ModelFileError",
    "NotFittedError",
    "Outcomes",
    "Plan",
    "PoolError",
    "PricingError",
    "Record",
    "RecordsError",
    "Reliability",
    "ReplayResult",
    "SpendGuard",
    "SpendLimitError",
    "TierTimeoutError",
    "Verdict",
    "__version__",
    "acollect",
    "collect",
    "get_grader",
    "load_examples",
    "load_prices",
    "read_records",
    "save_examples",
    "write_records",
]
