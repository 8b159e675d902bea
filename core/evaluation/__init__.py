"""Offline evaluation: replay on recorded outcomes, the baselines, the field's metrics, timing and plots.

Imports :mod:`crescade.engine` and :mod:`crescade.common`.
"""
