"""One sandbox for the whole session; tests add their own apps/users through the control API."""

from __future__ import annotations

import pytest

from mailwarden_sandbox import Sandbox
from tests.sandbox.helpers import SCENARIO, session_for


@pytest.fixture(scope="session")
def sb(tmp_path_factory):
    with Sandbox(SCENARIO, workdir=tmp_path_factory.mktemp("sandbox")) as box:
        yield box


@pytest.fixture(scope="session")
def http(sb):
    s = session_for(sb)
    yield s
    s.close()


