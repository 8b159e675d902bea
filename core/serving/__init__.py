"""Serving one request: the dispatch state machine and its drivers, reliability (timeouts, retries,
cool-downs, spend cap), request checks, redaction, stream timing and the conversation floor.

Imports :mod:`crescade.engine` and :mod:`crescade.common`; never an adapter or a framework.
"""
