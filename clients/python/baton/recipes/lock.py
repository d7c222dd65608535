"""The `lock` module: a fenced mutex in etcd's layout (interoperates with ``etcdctl lock``).

A grant carries a fencing token (the holder key's create revision, which only grows);
:meth:`HeldLock.fenced_put` and :meth:`HeldLock.fenced_txn` write only while that token still
holds the lock, so a paused ex-holder's late writes are refused (:class:`StaleFencingToken`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import Leased, wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session

MODULE = "lock"


@dataclass(frozen=True)
class Put:
    """A put in a fenced transaction."""

    key: str
    value: str = ""


@dataclass(frozen=True)
class Delete:
    """A delete in a fenced transaction."""

    key: str


class HeldLock:
    """A granted lock: its `key`, fencing `token`, and the `session` whose lease holds it."""

    def __init__(self, lock: Lock, key: str, token: int) -> None:
        self._lock = lock
        self.name = lock.name
        self.key = key
        self.token = token
        self.session = lock.session
        self._lease = self.session.lease

    def _call(self, function: str, input: dict[str, Any]) -> Any:
        # The grant's own lease, even after release (a late write must be refused, not re-leased).
        return self._lock.client.call(MODULE, function, input, lease=self._lease)

    def fenced_put(self, key: str, value: str) -> int:
        """Writes `key` only while this grant holds the lock; the revision written.

        Raises :class:`~baton.errors.StaleFencingToken` once it no longer does.
        """
        out = self._call("fenced-put", {"name": self.name, "token": self.token, "key": key, "value": value})
        return int(out["revision"])

    def fenced_txn(self, ops: list[Put | Delete]) -> int:
        """Applies every op or none, only while this grant holds the lock; the revision written."""
        wire: list[dict[str, str]] = []
        for op in ops:
            wire.append({"put": op.key, "value": op.value} if isinstance(op, Put) else {"delete": op.key})
        out = self._call("fenced-txn", {"name": self.name, "token": self.token, "ops": wire})
        return int(out["revision"])

    def release(self) -> None:
        """Gives the lock up (and closes the lock's own session, if it opened one)."""
        self._lock.release()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"HeldLock(name={self.name!r}, key={self.key!r}, token={self.token})"


class Lock(Leased):
    """A named mutex. ``with client.lock("db") as held:`` acquires (waiting its turn) and
    releases on exit; without a `session`, the lock keeps its own lease of `ttl` seconds."""

    def __init__(self, client: Client, name: str, session: Session | None = None, ttl: int = 10) -> None:
        super().__init__(client, session, ttl)
        self.name = name

    def _call(self, function: str, input: dict[str, Any], timeout: float | None = None) -> Any:
        return self.client.call(MODULE, function, input, lease=self.session.lease, timeout=timeout)

    def acquire(self, timeout: float | None = None, lock_delay_ms: int = 0) -> HeldLock:
        """Waits until the lock is granted (at most `timeout` seconds, None: no limit).

        Raises :class:`~baton.errors.DeadlineExceeded` when the time runs out (the server then
        withdraws this contender), :class:`~baton.errors.LeaseNotFound` if the lease ended.
        """
        input: dict[str, Any] = {"name": self.name}
        if lock_delay_ms:
            input["lock_delay_ms"] = lock_delay_ms
        try:
            out = self._call("acquire", input, timeout=wait_timeout(timeout))
        except BaseException:
            self._release_session()
            raise
        return HeldLock(self, out["key"], int(out["token"]))

    def try_acquire(self) -> HeldLock | None:
        """Takes the lock if it is free, else None at once (never queues)."""
        out = self._call("try-acquire", {"name": self.name})
        if not out.get("acquired"):
            self._release_session()
            return None
        return HeldLock(self, out["key"], int(out["token"]))

    def release(self) -> bool:
        """Gives the lock up; whether this session held (or waited for) it."""
        try:
            if self._own is None and self._given is None:
                return False
            return bool(self._call("release", {"name": self.name})["released"])
        finally:
            self._release_session()

    def __enter__(self) -> HeldLock:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()
