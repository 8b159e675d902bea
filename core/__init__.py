"""crescade: Cluster, Route, Escalate — a cost-aware LLM cascade.

The framework-free core: records, prices, embeddings, the two stages, the knob, the dispatch loop,
the artifact store and the replay evaluation. Adapters live in ``crescade_langchain`` and
``crescade_llamaindex``.
"""

from ._version import __version__
from .common.errors import (
    AllTiersFailedError,
    ArtifactError,
    ConfigError,
    CrescadeError,
    InputError,
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
    "ModelCard",
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
