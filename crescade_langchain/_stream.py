"""Streaming a child model: forward its chunks, time its first and last output, count its output chunks."""

from __future__ import annotations

import time

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import add_ai_message_chunks

__all__ = ["STRIPPED_CHUNK_METADATA", "LiveStream", "forwarded", "has_output"]

STRIPPED_CHUNK_METADATA = ("model_name", "output_version")


def has_output(chunk: AIMessageChunk) -> bool:
    """Whether ``chunk`` carries text or a tool-call piece (not just metadata)."""
    content = chunk.content
    return bool(content if isinstance(content, str) else any(content)) or bool(chunk.tool_call_chunks)


def forwarded(chunk: AIMessageChunk) -> AIMessageChunk:
    """A child's chunk as the cascade emits it: no usage, model name, id or stream position of its own."""
    meta = {k: v for k, v in chunk.response_metadata.items() if k not in STRIPPED_CHUNK_METADATA}
    return AIMessageChunk(content=chunk.content, additional_kwargs=dict(chunk.additional_kwargs),
                          response_metadata=meta, tool_call_chunks=list(chunk.tool_call_chunks), name=chunk.name)


class LiveStream:
    """Accumulates a child's streamed chunks; times its first and last output and counts output chunks.

    OpenAI-compatible servers send one token per content chunk, so ``n_output`` is the token count to
    use when the stream reports no usage (llama.cpp's server never does).
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.n_output = 0
        self.chunks: list[AIMessageChunk] = []

    def add(self, chunk: AIMessageChunk) -> AIMessageChunk | None:
        """Record ``chunk``; return what to forward (``None`` for a chunk that carries nothing of ours)."""
        self.chunks.append(chunk)
        if has_output(chunk):
            now = time.perf_counter()
            self.t_first = self.t_first or now
            self.t_last = now
            self.n_output += 1
        out = forwarded(chunk)
        if has_output(out) or out.response_metadata or out.additional_kwargs:
            return out
        return None

    def message(self) -> AIMessageChunk:
        """The whole streamed message."""
        if not self.chunks:
            raise ValueError("the chat model's stream returned no chunks")
        return add_ai_message_chunks(self.chunks[0], *self.chunks[1:], AIMessageChunk(content="",
                                                                                      chunk_position="last"))
