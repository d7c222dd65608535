"""Every recipe helper against a real cluster, with two clients where the recipe coordinates
two processes (the second client starts on another member)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest

import baton
from baton import errors

#: How long a woken waiter may take on a loaded machine.
WAKE_S = 20.0
#: How long a waiter must stay blocked to show it really waits.
BLOCKED_PROOF_S = 0.5

T = TypeVar("T")


def in_background(fn: Callable[[], T]) -> Future[T]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def still_waiting(future: Future[object]) -> bool:
    try:
        future.result(timeout=BLOCKED_PROOF_S)
    except TimeoutError:
        return True
    return False


def test_semaphore_admits_permits_holders_then_hands_off(client: baton.Client, other: baton.Client, name: str) -> None:
    a = client.semaphore(name, 2).acquire(timeout=WAKE_S)
    b = other.semaphore(name, 2).acquire(timeout=WAKE_S)
    assert a.token != b.token
    holders = client.semaphore(name, 2).holders()
    assert holders.permits == 2 and {h.token for h in holders.holders} == {a.token, b.token}
    assert other.semaphore(name, 2).try_acquire() is None
    third = in_background(lambda: other.semaphore(name, 2).acquire(timeout=WAKE_S))
    assert still_waiting(third), "a third holder got a permit of two"
    a.fenced_put(f"{name}-out", "a")
    a.release()
    c = third.result(timeout=WAKE_S)
    assert c.token > b.token
    with pytest.raises(errors.StaleFencingToken):
        a.fenced_put(f"{name}-out", "late")
    c.fenced_put(f"{name}-out", "c")
    assert client.get(f"{name}-out") == b"c"
    b.release()
    c.release()


def test_election_campaign_waits_while_another_leads(client: baton.Client, other: baton.Client, name: str) -> None:
    first = client.election(name)
    assert first.leader() is None
    token = first.campaign("a", timeout=WAKE_S)
    observed = first.observe(timeout=WAKE_S)
    seen = next(observed)
    assert (seen.value, seen.token) == ("a", token)
    second = other.election(name)
    campaign = in_background(lambda: second.campaign("b", timeout=WAKE_S))
    assert still_waiting(campaign), "two leaders at once"
    first.proclaim("a2")
    assert next(observed).value == "a2"
    with pytest.raises(errors.NotLeader):
        other.call("election", "proclaim", {"name": name, "token": token, "value": "x"}, lease=second.session)
    assert first.resign()
    new_token = campaign.result(timeout=WAKE_S)
    assert new_token > token
    changed = next(observed)
    assert (changed.value, changed.token) == ("b", new_token)
    leader = client.election(name).leader()
    assert leader is not None and leader.value == "b"
    second.resign()


def test_rwlock_readers_share_and_a_writer_waits(client: baton.Client, other: baton.Client, name: str) -> None:
    with client.rwlock(name).read(timeout=WAKE_S), other.rwlock(name).read(timeout=WAKE_S) as shared:
        assert shared.key is not None and "/read/" in shared.key
        writer_lock = client.rwlock(name)
        writer = writer_lock.write(timeout=WAKE_S)
        taken = in_background(writer.__enter__)
        assert still_waiting(taken), "a writer got in beside readers"
    assert "/write/" in (taken.result(timeout=WAKE_S).key or "")
    writer.__exit__(None, None, None)
    writer_lock.close()


def test_barrier_release_wakes_every_waiter(client: baton.Client, other: baton.Client, name: str) -> None:
    barrier = client.barrier(name)
    assert barrier.hold()
    assert not barrier.hold()
    waiters = [in_background(lambda c=c: c.barrier(name).wait(timeout=WAKE_S)) for c in (client, other)]
    assert all(still_waiting(w) for w in waiters), "a waiter passed a held barrier"
    assert other.barrier(name).release()
    for w in waiters:
        w.result(timeout=WAKE_S)
    client.barrier(name).wait(timeout=WAKE_S)  # open: returns at once


def test_double_barrier_enters_and_leaves_together(client: baton.Client, other: baton.Client, name: str) -> None:
    first = client.double_barrier(name, 2)
    entering = in_background(lambda: first.enter(timeout=WAKE_S))
    assert still_waiting(entering), "entered before the second participant"
    second = other.double_barrier(name, 2)
    second.enter(timeout=WAKE_S)
    assert entering.result(timeout=WAKE_S).startswith(f"{name}/waiters/")
    leaving = in_background(lambda: first.leave(timeout=WAKE_S))
    second.leave(timeout=WAKE_S)
    leaving.result(timeout=WAKE_S)


def test_queue_push_pop_peek_length(client: baton.Client, other: baton.Client, name: str) -> None:
    queue = client.queue(name)
    popped = in_background(lambda: other.queue(name).pop(timeout=WAKE_S))
    assert still_waiting(popped), "pop returned from an empty queue"
    queue.push("a")
    assert popped.result(timeout=WAKE_S).value == "a"
    queue.push("b")
    queue.push("c")
    peeked = queue.peek()
    assert peeked is not None and peeked.value == "b"
    assert queue.length().ready == 2
    assert [queue.pop(timeout=WAKE_S).value for _ in range(2)] == ["b", "c"]
    assert queue.peek() is None


def test_queue_reserve_nack_redelivers_then_ack_removes(client: baton.Client, other: baton.Client, name: str) -> None:
    client.queue(name).push("job")
    first = other.queue(name).reserve(visibility_ms=60_000, timeout=WAKE_S)
    assert (first.value, first.deliveries) == ("job", 1)
    assert client.queue(name).length().reserved == 1
    first.nack()
    again = client.queue(name).reserve(visibility_ms=60_000, timeout=WAKE_S)
    assert (again.value, again.deliveries) == ("job", 2)
    with pytest.raises(errors.ReservationLost):
        first.ack()  # settled already: refused, so it cannot delete what another holds
    again.ack()
    length = client.queue(name).length()
    assert (length.ready, length.reserved) == (0, 0)


def test_queue_reservation_bound_to_a_session_returns_when_it_ends(client: baton.Client, other: baton.Client, name: str) -> None:
    client.queue(name).push("job")
    with other.session(ttl=5) as consumer:
        taken = other.queue(name).reserve(session=consumer, timeout=WAKE_S)
        assert taken.value == "job"
    # The consumer's lease was revoked at close: the item is redelivered.
    back = client.queue(name).pop(timeout=WAKE_S)
    assert (back.value, back.deliveries) == ("job", 1)


def test_priority_queue_serves_lowest_priority_first(client: baton.Client, other: baton.Client, name: str) -> None:
    pq = client.priority_queue(name)
    pq.enqueue("low", 9)
    pq.enqueue("high", 1)
    pq.enqueue("high2", 1)
    got = [other.priority_queue(name).dequeue(timeout=WAKE_S) for _ in range(3)]
    assert got == [("high", 1), ("high2", 1), ("low", 9)]
    waiting = in_background(lambda: pq.dequeue(timeout=WAKE_S))
    assert still_waiting(waiting)
    other.priority_queue(name).enqueue("late", 5)
    assert waiting.result(timeout=WAKE_S) == ("late", 5)


def test_registry_lists_and_watches_changes(client: baton.Client, other: baton.Client, name: str) -> None:
    registry = client.registry(name)
    with other.session(ttl=5) as a, other.session(ttl=5) as b:
        other.registry(name).register("10.0.0.1:80", a, meta={"zone": "a"})
        listing = registry.list()
        assert set(listing.instances) == {"10.0.0.1:80"}
        assert listing.instances["10.0.0.1:80"].meta == {"zone": "a"}
        views = registry.watch(timeout=WAKE_S)
        assert set(next(views)) == {"10.0.0.1:80"}
        other.registry(name).register("10.0.0.2:80", b)
        assert set(next(views)) == {"10.0.0.1:80", "10.0.0.2:80"}
        changes = registry.changes(listing.revision, timeout=WAKE_S)
        # A change may be reported again (the module's revisions are conservative).
        assert "10.0.0.2:80" in [i.instance for i in changes.came]
        b.close()  # its lease goes, and so does its instance
        assert set(next(views)) == {"10.0.0.1:80"}
        assert other.registry(name).deregister("10.0.0.1:80")
        assert set(next(views)) == set()


def test_counter_adds_gets_and_waits(client: baton.Client, other: baton.Client, name: str) -> None:
    counter = client.counter(name)
    assert counter.get() == 0
    latch = in_background(lambda: other.counter(name).wait_at_least(2, timeout=WAKE_S))
    assert counter.add() == 1
    assert still_waiting(latch)
    assert counter.add(5) == 6
    assert latch.result(timeout=WAKE_S) == 6
    assert other.counter(name).get() == 6
