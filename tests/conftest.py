"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import RunningServer, running_server


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A memoryd server on the built-in default project and the embedded store."""
    async with running_server() as srv:
        yield srv
