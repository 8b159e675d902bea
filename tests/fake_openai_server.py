"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1, for the examples' ``--base-url`` path.

Two models: ``cheap-m`` passes an arithmetic tool call a string where an integer is expected and hedges
when asked to answer from a context; ``strong-m`` calls tools correctly and quotes the context's first
line. Both answer a tool result with "The answer is <result>." Streams (SSE) when asked to, one word per
chunk, with usage in a last chunk (or, with ``stream_usage=False``, none: llama.cpp's server). Serves
in a daemon thread until :meth:`FakeOpenAI.stop`; loopback only.

:meth:`FakeOpenAI.fail_next` makes the next requests for a model fail the way real servers do, on the
wire: ``429`` (with ``Retry-After``), ``429-bare``, ``500``, ``503``, ``reset`` (connection reset, no
response), ``malformed`` (200 with a body that is not JSON), ``hang`` (no response until released),
``stream-cut`` (two chunks, then the connection closes), ``401-echo`` (a 401 whose message repeats the key).

Asked for ``logprobs``, it returns them as OpenAI does (``choices[0].logprobs.content``: one
``{token, logprob, bytes, top_logprobs}`` per token; per chunk when streaming), with ``top_logprobs`` holding
the chosen token when ``top_logprobs >= 1``. Its tokens are the words and spaces of the answer
(:func:`tokens_of`), and their logprobs are :func:`token_logprobs` (a fixed pattern per model).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHEAP_M, STRONG_M = "cheap-m", "strong-m"
_ARITH = re.compile(r"(-?\d+)\s*(plus|times)\s*(-?\d+)")
_USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}


def tokens_of(content: str) -> list[str]:
    """The fake's tokens: the answer's words and runs of whitespace (one streamed chunk each)."""
    return [w for w in re.split(r"(\s+)", content) if w]


def token_logprobs(model: str, n: int) -> list[float]:
    """The logprobs the fake gives its ``n`` tokens: confident for ``strong-m``, unsure for ``cheap-m``."""
    pattern = (-0.05, -0.2, -0.1) if model == STRONG_M else (-1.5, -0.4, -2.5, -0.9)
    return [pattern[i % len(pattern)] for i in range(n)]


def _logprob_entries(body: dict[str, Any], tokens: list[str], first: int = 0) -> dict[str, Any] | None:
    if not body.get("logprobs"):
        return None
    lps = token_logprobs(body["model"], first + len(tokens))[first:]
    top = int(body.get("top_logprobs") or 0)
    content = []
    for t, lp in zip(tokens, lps, strict=True):
        entry = {"token": t, "logprob": lp, "bytes": list(t.encode())}
        content.append({**entry, "top_logprobs": [entry] if top >= 1 else []})
    return {"content": content, "refusal": None}


def reply(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message (OpenAI wire format) and finish reason for one request."""
    model, messages, tools = body["model"], body["messages"], body.get("tools") or []
    last = messages[-1]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    calc = _ARITH.search(question if isinstance(question, str) else "")
    if last["role"] == "tool":
        return {"content": f"The answer is {last['content']}."}, "stop"
    if tools and calc and last["role"] == "user":
        a, b = int(calc.group(1)), int(calc.group(3))
        args: dict[str, Any] = {"a": a, "b": b} if model == STRONG_M else {"a": f"{a} units", "b": b}
        name = "add" if calc.group(2) == "plus" else "multiply"
        call = {"id": f"call_{model}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        return {"content": None, "tool_calls": [call]}, "tool_calls"
    text = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
    if "Context:" in text:
        if model == CHEAP_M:
            return {"content": "I'm not sure, the context may not say."}, "stop"
        return {"content": text.split("Context:", 1)[1].strip().splitlines()[0]}, "stop"
    return {"content": "The capital of Japan is Tokyo."}, "stop"


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai/0"
    protocol_version = "HTTP/1.1"  # streams use chunked transfer encoding, so a cut stream is detectable

    def end_headers(self) -> None:
        # one request per connection: clients' pooled connections never outlive the event loop that made them
        self.send_header("Connection", "close")
        self.close_connection = True
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _error(self, status: int, headers: dict[str, str] | None = None, message: str | None = None) -> None:
        data = json.dumps({"error": {"message": message or f"fake error {status}", "type": "server_error",
                                     "code": status}})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data.encode())

    def _fault(self, fault: str) -> bool:
        """Act out ``fault``; True when the request is done with (no normal reply)."""
        if fault in ("429", "429-bare"):
            self._error(429, {"Retry-After": "30"} if fault == "429" else None)
        elif fault in ("500", "503"):
            self._error(int(fault))
        elif fault == "401-echo":  # a careless provider that repeats the credential it was given
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            self._error(401, message=f"Incorrect API key provided: {key}. Find your key at the console.")
        elif fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
        elif fault == "malformed":
            data = b'{"id": "chatcmpl-fake", "choices": [{"message": '
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif fault == "hang":
            self.server.released.wait(60)  # type: ignore[attr-defined]
            self.close_connection = True
        else:
            return False
        return True

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        fault = self.server.take_fault(body["model"])  # type: ignore[attr-defined]
        if fault and self._fault(fault):
            return
        msg, finish = reply(body)
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            out = {**base, "object": "chat.completion", "usage": _USAGE,
                   "choices": [{"index": 0, "message": {"role": "assistant", **msg}, "finish_reason": finish,
                                "logprobs": _logprob_entries(body, tokens_of(msg.get("content") or ""))}]}
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = {**base, "object": "chat.completion.chunk"}
        words = tokens_of(msg.get("content") or "")
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": w} for w in words]
        deltas += [{"tool_calls": [{"index": i, **c}]} for i, c in enumerate(msg.get("tool_calls") or [])]
        chunk_lps = [_logprob_entries(body, [w], i) for i, w in enumerate(words)]
        chunk_lps += [None] * (len(deltas) - len(words))  # tool-call pieces carry none
        events = [{**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None, "logprobs": lp}]}
                  for d, lp in zip(deltas, chunk_lps, strict=True)]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if self.server.stream_usage:  # type: ignore[attr-defined]
            events.append({**chunk, "choices": [], "usage": _USAGE})
        lines = [f"data: {json.dumps(event)}\n\n".encode() for event in events] + [b"data: [DONE]\n\n"]
        if fault == "stream-cut":  # two chunks, then the connection closes without the last chunk
            for line in lines[:2]:
                self._chunk(line)
            self.wfile.flush()
            self.close_connection = True
            return
        for line in lines:
            self._chunk(line)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class FakeOpenAI:
    """The server, started on a free loopback port."""

    def __init__(self, *, stream_usage: bool = True) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.httpd.stream_usage = stream_usage  # type: ignore[attr-defined]
        self.httpd.released = threading.Event()  # type: ignore[attr-defined]
        self._faults: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self.httpd.take_fault = self._take  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.httpd.requests)  # type: ignore[attr-defined]

    def fail_next(self, model: str, fault: str, count: int = 1) -> None:
        """Make the next ``count`` requests for ``model`` fail with ``fault`` (see the module docstring)."""
        with self._lock:
            self._faults.setdefault(model, deque()).extend([fault] * count)

    def _take(self, model: str) -> str | None:
        with self._lock:
            q = self._faults.get(model)
            return q.popleft() if q else None

    def stop(self) -> None:
        self.httpd.released.set()  # type: ignore[attr-defined]
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
