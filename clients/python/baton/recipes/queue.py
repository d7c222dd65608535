"""The `queue` module (FIFO with delayed delivery and reserve/ack/nack) and the
`priority-queue` module (etcd's ``recipe.PriorityQueue`` layout).

A consumer that must not lose items uses :meth:`Queue.reserve` and acks once done: an item
reserved and not acked (nacked, timed out, or its consumer's lease ended) is redelivered first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session


@dataclass(frozen=True)
class Item:
    """An item taken or seen: the `key` it lived under, its `value`, and how many times it
    was reserved before (`deliveries`, 0 for an item never reserved)."""

    key: str
    value: str
    deliveries: int = 0

    @staticmethod
    def of(out: dict[str, Any]) -> Item:
        return Item(out["key"], out["value"], int(out.get("deliveries", 0)))


@dataclass(frozen=True)
class Length:
    ready: int
    delayed: int
    reserved: int


@dataclass
class Reservation:
    """A reserved item: settle it with :meth:`ack` (done) or :meth:`nack` (redeliver)."""

    queue: Queue
    token: int
    key: str
    value: str
    deliveries: int
    visible_at_ms: int | None = None
    settled: bool = field(default=False)

    def ack(self) -> str:
        """Removes the item for good; its key. Raises :class:`~baton.errors.ReservationLost`
        if the reservation ended first (the item then goes to someone else)."""
        out = self.queue._call("ack", {"token": self.token})
        self.settled = True
        return str(out["acked"])

    def nack(self, delay_ms: int | None = None) -> str:
        """Gives the item back for redelivery (after `delay_ms`); its key."""
        input: dict[str, Any] = {"token": self.token}
        if delay_ms is not None:
            input["delay_ms"] = delay_ms
        out = self.queue._call("nack", input)
        self.settled = True
        return str(out["nacked"])


class Queue:
    """A FIFO queue named `name` (items are the keys under ``<name>/``)."""

    MODULE = "queue"

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def _call(self, function: str, input: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.call(self.MODULE, function, {"queue": self.name, **(input or {})}, **kw)

    def push(self, value: str, delay_ms: int | None = None, deliver_at_ms: int | None = None) -> str:
        """Appends an item (delivered no sooner than `delay_ms` from now, or leader time
        `deliver_at_ms`); the key it was given."""
        input: dict[str, Any] = {"value": value}
        if delay_ms is not None:
            input["delay_ms"] = delay_ms
        if deliver_at_ms is not None:
            input["deliver_at_ms"] = deliver_at_ms
        return str(self._call("push", input)["key"])

    def pop(self, timeout: float | None = None) -> Item:
        """Takes the next item for good, waiting for one (at most `timeout` seconds)."""
        return Item.of(self._call("pop", timeout=wait_timeout(timeout)))

    def reserve(
        self,
        visibility_ms: int | None = None,
        session: Session | None = None,
        timeout: float | None = None,
    ) -> Reservation:
        """Takes the next item until it is acked, waiting for one (at most `timeout` s).

        The reservation ends after `visibility_ms` (the module's default when None), or, with
        a `session`, when the session's lease ends; then the item is redelivered.
        """
        input: dict[str, Any] = {}
        lease = None
        if session is not None:
            input["until_lease_ends"] = True
            lease = session.lease
        elif visibility_ms is not None:
            input["visibility_ms"] = visibility_ms
        out = self._call("reserve", input, lease=lease, timeout=wait_timeout(timeout))
        return Reservation(
            self, int(out["token"]), out["key"], out["value"], int(out["deliveries"]), out.get("visible_at_ms")
        )

    def peek(self) -> Item | None:
        """The item :meth:`pop` would take now, or None (a read-only call)."""
        out = self._call("peek", read_only=True)
        return None if out is None else Item.of(out)

    def length(self) -> Length:
        """How many items are ready, delayed and reserved (a read-only call)."""
        out = self._call("length", read_only=True)
        return Length(int(out["ready"]), int(out["delayed"]), int(out["reserved"]))


class PriorityQueue:
    """A priority queue named `name`: the lowest priority number first, FIFO within one."""

    MODULE = "priority-queue"

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def enqueue(self, value: str, priority: int) -> str:
        """Adds an item at `priority` (0..65535, lower first); its key."""
        out = self.client.call(self.MODULE, "enqueue", {"queue": self.name, "value": value, "priority": priority})
        return str(out["key"])

    def dequeue(self, timeout: float | None = None) -> tuple[str, int]:
        """Removes the first item, waiting for one (at most `timeout` s); (value, priority)."""
        out = self.client.call(self.MODULE, "dequeue", {"queue": self.name}, timeout=wait_timeout(timeout))
        return str(out["value"]), int(out["priority"])
