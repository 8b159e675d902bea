"""Tooling around the library: the command line, record collection, graders, the generated task suite,
the local llama.cpp models and the live demo. May import every other layer, never an adapter: the CLI
reaches an adapter only through the ``crescade.live`` entry-point group (:mod:`crescade.tools.backends`).
"""
