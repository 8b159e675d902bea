"""Cascade as a scikit-learn-style estimator: parameters from the signature, fitted state in one dataclass."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from crescade import Cascade, ConfigError, NotFittedError, Outcomes
from crescade.engine.state import CascadeState
from crescade.engine.store import dump_fields, load_fields


def test_parameters_are_keyword_only_after_the_knob() -> None:
    params = list(inspect.signature(Cascade.__init__).parameters.values())[1:]
    assert params[0].name == "quality_target" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert Cascade(0.97).quality_target == 0.97
    with pytest.raises(TypeError):
        Cascade(None, 0.5)  # type: ignore[misc]


def test_get_params_follows_the_signature_and_set_params_round_trips() -> None:
    c = Cascade(quality_target=None, cost_target=0.4, n_clusters=8, progress=False)
    params = c.get_params()
    assert list(params) == [p for p in inspect.signature(Cascade.__init__).parameters if p != "self"]
    assert params["cost_target"] == 0.4 and params["n_clusters"] == 8 and params["embedder"] is None
    clone = Cascade(**params)
    assert clone.get_params() == params
    assert c.set_params(shrinkage=3.0, max_depth=2) is c
    assert (c.shrinkage, c.max_depth) == (3.0, 2)
    with pytest.raises(ConfigError, match=r"invalid parameter\(s\) 'depth' for Cascade; valid parameters: "):
        c.set_params(depth=2)


def test_constructor_only_stores_and_fit_validates(train: Outcomes) -> None:
    c = Cascade(quality_target=5.0, max_depth=7)  # stored as given, like scikit-learn
    assert c.max_depth == 7
    with pytest.raises(ConfigError, match="quality_target"):
        c.fit(train)


def test_repr_shows_what_differs_from_the_defaults() -> None:
    assert repr(Cascade()) == "Cascade()"
    assert repr(Cascade(0.97, n_clusters=8)) == "Cascade(quality_target=0.97, n_clusters=8)"
    assert repr(Cascade(cluster_grid=list(Cascade().cluster_grid))) == "Cascade()"  # a list equals the tuple


DERIVED = ("frontier", "general_ladder", "general_tau_index")


def test_state_is_every_fitted_attribute(cascade: Cascade) -> None:
    state = cascade.state_
    for f in fields(CascadeState):
        assert getattr(state, f.name) is getattr(cascade, f"{f.name}_"), f.name
    with pytest.raises(NotFittedError):
        _ = Cascade().state_


def test_state_persists_from_its_one_field_list(cascade: Cascade, tmp_path: Path) -> None:
    """Every field of CascadeState goes to the artifact and comes back: none can be saved but not loaded."""
    meta, arrays = dump_fields(cascade.state_)
    back = load_fields(CascadeState, meta, arrays, {})
    for f in fields(CascadeState):
        a, b = getattr(cascade.state_, f.name), getattr(back, f.name)
        if f.name in DERIVED:  # re-solved on load, not stored
            assert b == f.default or b == f.default_factory()  # type: ignore[misc]
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        elif f.name in ("embedder", "qe"):
            assert type(a) is type(b)
        elif f.name == "text":
            np.testing.assert_array_equal(a.coef_, b.coef_)
            assert (a.intercept_, a.report_) == (b.intercept_, b.report_)
        elif f.name == "calib":
            np.testing.assert_array_equal(a.p0, b.p0)
            np.testing.assert_array_equal(a.labels, b.labels)
        elif f.name == "honest":
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        elif f.name == "profiler":
            assert a is not None and b is not None  # three models: the profile space was a candidate
            np.testing.assert_array_equal(a.coef_, b.coef_)
            np.testing.assert_array_equal(a.intercept_, b.intercept_)
            assert (a.C_, a.log_loss_) == (b.C_, b.log_loss_)
        else:
            assert a == b, f.name
    back.check()
    cascade.save(tmp_path / "c")
    loaded = Cascade.load(tmp_path / "c")
    assert loaded.get_params() == {**cascade.get_params(), "progress": False}
    for name in ("ladders", *DERIVED):  # the derived fields come back by re-solving
        assert getattr(loaded.state_, name) == getattr(cascade.state_, name), name
