"""pytest plugin for projects using llamaberry: the ``fake_server`` and ``local_model`` fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from llamaberry.providers.local import LocalServer
    from llamaberry.testing import FakeServer


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``real`` marker, so ``-m real`` / ``-m "not real"`` select the tier."""
    config.addinivalue_line(
        "markers", "real: runs a real model on the local provider (llama.cpp, in-process)"
    )


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A fresh ``llamaberry.testing.FakeServer`` running in a background thread."""
    # Imported here so merely loading the plugin stays cheap for every pytest run.
    from llamaberry.testing import FakeServer

    with FakeServer() as server:
        yield server


@pytest.fixture(scope="session")
def local_model() -> Iterator[LocalServer]:
    """The embedded model served by llama.cpp for the whole session.

    Engines built with ``provider="local"`` while it is held share this one server instead of
    starting their own; its ``base_url`` also reaches llama.cpp's own endpoints (``/props``,
    ``/slots``, ``/tokenize``).
    """
    from llamaberry.providers.local import EMBEDDED_MODEL, acquire, release

    server = acquire(EMBEDDED_MODEL)
    yield server
    release(server)
