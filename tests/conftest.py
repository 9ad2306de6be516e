"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import RunningServer, running_server, storage_project


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    """A memoryd server on the embedded store whose 'default' memory never flushes."""
    async with running_server(storage_project()) as srv:
        yield srv
