"""crescade: Cluster, Route, Escalate — a cost-aware LLM cascade.

The framework-free core: records, prices, embeddings, the two stages, the knob, the dispatch loop,
the artifact store and the replay evaluation. Adapters live in ``crescade_langchain`` and
``crescade_llamaindex``.
"""

__version__ = "0.1.0"

from .cascade import Cascade, ReplayResult
from .collect import CollectReport, Example, acollect, collect, load_examples, save_examples
from .decisions import Answer, Plan, Verdict
from .errors import (
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
from .graders import get_grader
from .pricing import ModelCard, load_prices
from .records import Outcomes, Record, read_records, write_records
from .reliability import Cooldowns, Reliability, SpendGuard, SpendLimitError, TierTimeoutError

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
