"""LlamaIndex adapter for crescade (CascadeLLM). Filled in by the LlamaIndex adapter issue."""
