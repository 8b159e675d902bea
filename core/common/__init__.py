"""Plumbing every layer shares: the exception types, secret redaction, atomic writes, JSON-safe values and
the progress bar. Imports nothing else from crescade."""
