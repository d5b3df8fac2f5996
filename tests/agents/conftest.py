"""Module-scoped fixtures of the persona-agent tests: the tiny world (``agentkit.make_world``) and its trained
persona-LoRA artifact (``agentkit.train_tiny``), built once per test module that asks for them."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from agentkit import make_world

    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def trained(world) -> Path:
    from agentkit import train_tiny

    return train_tiny(world)
