"""Type-check the core (``core/``, imported as ``crescade``) and both adapters with mypy.

    python scripts/typecheck.py [extra mypy arguments]

The core's folder is not named after its package (``package-dir`` maps ``crescade`` to ``core/``), so mypy
is run on a temporary tree of symlinks that spells the real package names: the errors then name
``crescade/...`` paths exactly as users import them. Configuration: ``[tool.mypy]`` in ``pyproject.toml``.
Exit status: mypy's (0 when there is no error).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"crescade": ROOT / "core", "crescade_langchain": ROOT / "crescade_langchain",
            "crescade_llamaindex": ROOT / "crescade_llamaindex"}


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="crescade-typecheck-") as tmp:
        for name, source in PACKAGES.items():
            (Path(tmp) / name).symlink_to(source, target_is_directory=True)
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(Path(tmp) / ".mypy_cache"), *(a for p in PACKAGES for a in ("-p", p)), *argv]
        return subprocess.run(cmd, cwd=tmp, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
