"""Real client libraries against a real deployment of the bundled model (transformers)."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from tests.conftest import Deployed
from tests.integration.real_clients import CHECKS

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_real_client(bundled_model: Deployed, check: Callable[[str, str, str], None]) -> None:
    check(bundled_model.base_url, bundled_model.key, bundled_model.name)


def test_auto_tool_choice_is_a_400_on_the_bundled_model(bundled_model: Deployed) -> None:
    client = openai.OpenAI(base_url=bundled_model.base_url, api_key=bundled_model.key)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=bundled_model.name,
            messages=[{"role": "user", "content": "Hi"}],
            tools=[tool],  # type: ignore[list-item]
            tool_choice="auto",
        )
    assert refused.value.param == "tool_choice" and "has none" in str(refused.value)
