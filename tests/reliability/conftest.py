"""The reliability suite reuses the adapter tests' scripted children and data (``tests/langchain``,
``tests/llamaindex``); ``harness`` puts them on ``sys.path``, as ``benchmarks/reliability.py`` needs too."""

from __future__ import annotations

import harness  # noqa: F401
