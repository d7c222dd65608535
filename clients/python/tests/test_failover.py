"""Failover on the shared cluster: the member a client uses is
SIGKILLed, and the next calls (a read-only module call, then writing ones, and the session's
keep-alives) succeed through another endpoint; a writing call whose first endpoint is down is
sent to the next one.

Why the first call after the kill is a read: gRPC may put it on the dead member's connection
before noticing the connection is gone ("Socket closed"). For a read that is harmless and the
client resends it; for a write the client cannot tell whether the member received (and
forwarded) it, so it raises Unavailable instead of risking a double apply (the documented rule).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import baton
from cluster import Cluster
from conftest import CALL_TIMEOUT_S

SESSION_TTL_S = 8


@pytest.fixture
def own_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The shared cluster, made whole again after a test killed a member (same data dir: it
    rejoins), so later tests see three members."""
    try:
        yield cluster
    finally:
        dead = [m for m in cluster.members if m.process is not None and m.process.poll() is not None]
        for member in dead:
            cluster.launch(member)
        cluster.wait_ready(dead)


def test_calls_fail_over_when_the_member_in_use_is_killed(own_cluster: Cluster, name: str) -> None:
    own_cluster.wait_ready()
    # A budget for the whole call that covers a new election if the leader was the one killed.
    with baton.Client(own_cluster.endpoints, timeout=CALL_TIMEOUT_S * 3) as client:
        counter = client.counter(name)
        assert counter.add() == 1
        session = client.session(ttl=SESSION_TTL_S)
        used = client.endpoint
        own_cluster.kill(own_cluster.member_at(used))

        assert counter.get() == 1  # a read-only call: resent to the next member
        assert client.endpoint != used
        assert counter.add() == 2  # writing calls now go to the new member
        assert client.get(name) == b"2"
        # Renewals moved too: the lease outlives its TTL with its first member dead.
        time.sleep(SESSION_TTL_S / 2 + 1)
        assert not session.lost.is_set(), session.lost_reason
        assert client.time_to_live(session.lease) > 0
        session.close()


def test_a_client_whose_first_endpoint_is_down_uses_the_next(own_cluster: Cluster, name: str) -> None:
    dead = own_cluster.members[0]
    own_cluster.kill(dead)
    endpoints = [dead.endpoint] + [m.endpoint for m in own_cluster.members if m is not dead]
    with baton.Client(endpoints[1:], timeout=CALL_TIMEOUT_S * 3) as survivors:
        survivors.counter(name).get()  # the survivors have a leader again
    with baton.Client(endpoints, timeout=CALL_TIMEOUT_S * 3) as client:
        # Refused at connect: provably not sent, so even this writing call moves on.
        assert client.call("counter", "add", {"keys": [name], "by": 3}) == {name: 3}
        assert client.endpoint != dead.endpoint


def test_failover_rule_resends_only_what_cannot_apply_twice() -> None:
    import grpc

    from baton.client import _not_sent

    class Failed(grpc.RpcError, grpc.Call):  # a stand-in for what grpc raises
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

        def initial_metadata(self): ...  # noqa: D102
        def trailing_metadata(self): ...  # noqa: D102
        def is_active(self) -> bool: return False  # noqa: D102
        def time_remaining(self): ...  # noqa: D102
        def cancel(self) -> bool: return False  # noqa: D102
        def add_callback(self, callback) -> bool: return False  # noqa: D102

    u = grpc.StatusCode.UNAVAILABLE
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"
    assert _not_sent(Failed(u, refused))
    assert _not_sent(Failed(u, "etcdserver: no leader"))
    assert not _not_sent(Failed(u, "Socket closed"))
    assert not _not_sent(Failed(u, "etcdserver: request timed out"))
    assert not _not_sent(Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
