"""Fixtures: one 3-member cluster for the whole session, and clients on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import baton
from cluster import Cluster

#: Deadline of calls that should answer at once, in seconds (generous: 2 shared cores).
CALL_TIMEOUT_S = 10.0


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[baton.Client]:
    with baton.Client(cluster.endpoints, timeout=CALL_TIMEOUT_S) as c:
        yield c


@pytest.fixture
def other(cluster: Cluster) -> Iterator[baton.Client]:
    """A second client (another process's view), starting on another member."""
    endpoints = cluster.endpoints[1:] + cluster.endpoints[:1]
    with baton.Client(endpoints, timeout=CALL_TIMEOUT_S) as c:
        yield c


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, so tests share the cluster without sharing state."""
    return f"{request.node.name}-{uuid.uuid4().hex[:8]}"
