"""LangChain adapter for crescade (CascadeChatModel). Filled in by the LangChain adapter issue."""
