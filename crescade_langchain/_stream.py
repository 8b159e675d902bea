"""Streaming a child model: forward its chunks, time its first and last output, count its output chunks."""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import add_ai_message_chunks

from crescade.seam import StreamClock

__all__ = ["STRIPPED_CHUNK_METADATA", "LiveStream", "forwarded", "has_output"]

STRIPPED_CHUNK_METADATA = ("model_name", "output_version", "crescade")  # ours come on the final chunk


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
    """Accumulates a child's streamed chunks, timing them with a :class:`~crescade.serving.streamclock.StreamClock`
    (first and last output, output chunks counted: the token estimate when the stream reports no usage)."""

    def __init__(self, t0: float) -> None:
        self.clock = StreamClock(t0)
        self.chunks: list[AIMessageChunk] = []

    @property
    def t_first(self) -> float | None:
        return self.clock.t_first

    def add(self, chunk: AIMessageChunk) -> AIMessageChunk | None:
        """Record ``chunk``; return what to forward (``None`` for a chunk that carries nothing of ours)."""
        self.chunks.append(chunk)
        if has_output(chunk):
            self.clock.tick()
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
