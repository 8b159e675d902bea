"""langchain-tests' standard unit and integration suites against the cascade over scripted fakes.

The default scripted text answers look wrong to the quality estimator, so most calls escalate through
every tier: the suites exercise the whole ladder, tool binding on every tier and the account.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_support import fitted_cascade, scripted

from crescade_langchain import CascadeChatModel

NESTED_RUNS = ("cascade nests child chat-model runs under its own run: on_chat_model_start fires once per "
               "tier, and the standard test asserts it fires exactly once (notes/frameworks.md A11)")


class _Params:
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return CascadeChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"models": scripted(), "cascade": fitted_cascade()}


class TestCascadeChatModelUnit(_Params, ChatModelUnitTests):
    pass


class TestCascadeChatModelIntegration(_Params, ChatModelIntegrationTests):
    @pytest.mark.xfail(reason=NESTED_RUNS)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: BaseChatModel, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=NESTED_RUNS)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)
