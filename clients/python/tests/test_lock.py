"""Locks, try-locks and fencing against a real cluster: hand-off between two clients, a stale
token refused, and a lost lease surfacing (session.lost, then the fenced put refused)."""

from __future__ import annotations

import threading
import time

import pytest

import baton
from baton import errors
from baton.recipes.lock import Delete, Put

#: How long a woken waiter may take on a loaded machine.
WAKE_S = 20.0
#: How long a waiter must stay blocked to show it really waits.
BLOCKED_PROOF_S = 0.5


def test_lock_hands_off_between_clients_with_growing_tokens(client: baton.Client, other: baton.Client, name: str) -> None:
    order: list[str] = []
    with client.lock(name) as first:
        assert first.key.startswith(f"{name}/") and first.token > 0
        granted = threading.Event()
        second: list[baton.HeldLock] = []

        def contend() -> None:
            held = other.lock(name).acquire(timeout=WAKE_S)
            order.append("second")
            second.append(held)
            granted.set()

        waiter = threading.Thread(target=contend)
        waiter.start()
        assert not granted.wait(BLOCKED_PROOF_S), "the lock was granted twice"
        first.fenced_put(f"{name}-out", "first")
        order.append("first released")
    waiter.join(WAKE_S)
    assert order == ["first released", "second"]
    held = second[0]
    assert held.token > first.token
    # The first grant's token is stale now: its late write is refused by the server.
    with pytest.raises(errors.StaleFencingToken) as stale:
        first.fenced_put(f"{name}-out", "late")
    assert "stale fencing token" in stale.value.message
    held.fenced_txn([Put(f"{name}-out", "second"), Delete(f"{name}-gone")])
    assert client.get(f"{name}-out") == b"second"
    held.release()


def test_try_lock_does_not_wait(client: baton.Client, other: baton.Client, name: str) -> None:
    held = client.try_lock(name)
    assert held is not None
    started = time.monotonic()
    assert other.try_lock(name) is None
    assert time.monotonic() - started < WAKE_S
    held.release()
    again = other.try_lock(name)
    assert again is not None and again.token > held.token
    again.release()


def test_acquire_that_times_out_raises_and_withdraws(client: baton.Client, other: baton.Client, name: str) -> None:
    with client.lock(name):
        with pytest.raises(errors.DeadlineExceeded):
            other.lock(name).acquire(timeout=0.5)
    # The abandoned contender left no key behind: the next one is granted at once.
    with other.lock(name).acquire(timeout=WAKE_S) as held:
        assert held.token > 0


def test_lost_lease_sets_lost_and_fences_the_holder(client: baton.Client, other: baton.Client, name: str) -> None:
    lost: list[errors.LeaseLost] = []
    with client.session(ttl=3, on_lost=lost.append) as session:
        held = client.lock(name, session=session).acquire(timeout=WAKE_S)
        held.fenced_put(f"{name}-out", "ok")
        other.revoke(session.lease)  # another process ends our lease
        assert session.lost.wait(WAKE_S), "the session did not notice its lease ended"
        assert lost and isinstance(lost[0], errors.LeaseLost)
        with pytest.raises(errors.LeaseLost):
            session.check()
        with pytest.raises(errors.StaleFencingToken):
            held.fenced_put(f"{name}-out", "after loss")
        # A call attaching a key to the dead lease is refused as lease-not-found.
        with pytest.raises(errors.LeaseNotFound):
            client.lock(name, session=session).acquire(timeout=WAKE_S)
    assert client.get(f"{name}-out") == b"ok"


def test_session_keeps_its_lease_alive_past_the_ttl(client: baton.Client) -> None:
    with client.session(ttl=2) as session:
        time.sleep(3)
        assert not session.lost.is_set()
        assert client.time_to_live(session.lease) > 0
        lease = session.lease
    assert client.time_to_live(lease) == -1
