"""pytest plugin for projects using llamaberry: provides the ``fake_server`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from llamaberry.testing import FakeServer


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A fresh ``llamaberry.testing.FakeServer`` running in a background thread."""
    # Imported here so merely loading the plugin stays cheap for every pytest run.
    from llamaberry.testing import FakeServer

    with FakeServer() as server:
        yield server
