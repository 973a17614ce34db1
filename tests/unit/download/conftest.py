from __future__ import annotations

import pytest

from tests.unit.download.fault_server import FaultServer


@pytest.fixture
def server():
    srv = FaultServer().start()
    try:
        yield srv
    finally:
        srv.stop()
