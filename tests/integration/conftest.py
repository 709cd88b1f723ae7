"""Fixtures for tests that drive the engine in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from chatbatch.settings import get_settings
from worker.engine import Engine as BatchEngine
from worker.runtime import build_engine


@pytest.fixture
def engine(pg: Engine) -> Iterator[BatchEngine]:
    """An engine built from the test's settings, aimed at the simulator."""
    built = build_engine(get_settings())
    yield built
    built.close()
