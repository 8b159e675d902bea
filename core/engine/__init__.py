"""The engine: records, prices, tokens, embeddings, Stage 1 (clusters), Stage 2 (the quality estimator),
the knob, the fitted :class:`~crescade.engine.cascade.Cascade` and its artifact store.

Pure computation, no I/O but the record and artifact files; imports only :mod:`crescade.common`.
"""
