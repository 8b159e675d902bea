"""Real LangChain / LangGraph pipelines around the cascade (a package, so its conftest never shadows tests/conftest)."""
