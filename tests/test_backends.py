"""crescade.tools.backends: how the core CLI reaches an adapter through the ``crescade.live`` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from crescade import CrescadeError
from crescade.tools import backends
from crescade.tools.backends import GROUP, LiveBackend, live_backend


def test_the_langchain_adapter_is_registered_and_found() -> None:
    backend = live_backend()
    assert isinstance(backend, LiveBackend)
    assert type(backend).__module__ == "crescade_langchain.live"
    assert "langchain" in {ep.name for ep in backends._entry_points()}


def _register(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    eps = [EntryPoint(name=n, value=v, group=GROUP) for n, v in values.items()]
    monkeypatch.setattr(backends, "_entry_points", lambda: eps)


def test_unregistered_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch)
    with pytest.raises(CrescadeError, match=r"crescade collect needs the 'langchain' live backend .*registered: "
                                            r"none.*pip install 'crescade\[live\]'"):
        live_backend(what="crescade collect")


def test_backend_whose_framework_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, langchain="crescade_no_such_adapter.live:BACKEND")
    with pytest.raises(CrescadeError, match=r"dependencies are missing \(crescade_no_such_adapter\).*crescade\[live\]"):
        live_backend()


def test_entry_point_that_is_not_a_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, langchain="os:sep")
    with pytest.raises(CrescadeError, match="is not a live backend"):
        live_backend()


def test_environment_selects_another_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, langchain="crescade_langchain.live:BACKEND", mine="crescade_langchain.live:BACKEND")
    monkeypatch.setenv("CRESCADE_LIVE_BACKEND", "other")
    with pytest.raises(CrescadeError, match=r"'other' live backend .*registered: langchain, mine"):
        live_backend()
    monkeypatch.setenv("CRESCADE_LIVE_BACKEND", "mine")
    assert isinstance(live_backend(), LiveBackend)
