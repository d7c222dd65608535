"""The `semaphore` module: `permits` holders at once, first come first served, each grant with
its own fencing token; a holder whose lease ends frees its permit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import Leased, wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session

MODULE = "semaphore"


@dataclass(frozen=True)
class Holder:
    key: str
    lease: int
    token: int


@dataclass(frozen=True)
class Holders:
    """What `holders` answers: the permit count, who holds one, how many wait."""

    permits: int
    holders: list[Holder]
    waiting: int


class Permit:
    """A granted permit: its contender `key` and fencing `token`."""

    def __init__(self, semaphore: Semaphore, key: str, token: int) -> None:
        self._semaphore = semaphore
        self.key = key
        self.token = token
        self._lease = semaphore.session.lease

    def fenced_put(self, key: str, value: str) -> int:
        """Writes `key` only while this permit is held; raises StaleFencingToken otherwise."""
        s = self._semaphore
        input = {"name": s.name, "token": self.token, "key": key, "value": value}
        out = s.client.call(MODULE, "fenced-put", input, lease=self._lease)
        return int(out["revision"])

    def release(self) -> None:
        self._semaphore.release()

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Semaphore(Leased):
    """A counting semaphore of `permits`. Callers of one name must agree on the count.

    ``with client.semaphore("pool", 3) as permit:`` waits for a permit and frees it on exit.
    """

    def __init__(self, client: Client, name: str, permits: int, session: Session | None = None, ttl: int = 10) -> None:
        super().__init__(client, session, ttl)
        self.name = name
        self.permits = permits

    def _call(self, function: str, input: dict[str, Any], timeout: float | None = None) -> Any:
        return self.client.call(MODULE, function, input, lease=self.session.lease, timeout=timeout)

    def acquire(self, timeout: float | None = None) -> Permit:
        """Waits for a permit (at most `timeout` seconds; None: no limit)."""
        try:
            out = self._call("acquire", {"name": self.name, "permits": self.permits}, timeout=wait_timeout(timeout))
        except BaseException:
            self._release_session()
            raise
        return Permit(self, out["key"], int(out["token"]))

    def try_acquire(self) -> Permit | None:
        """A permit if one is free now, else None (never queues)."""
        out = self._call("try-acquire", {"name": self.name, "permits": self.permits})
        if not out.get("acquired"):
            self._release_session()
            return None
        return Permit(self, out["key"], int(out["token"]))

    def release(self) -> bool:
        """Frees this session's permit (or place in line); whether it had one."""
        try:
            return bool(self._call("release", {"name": self.name})["released"])
        finally:
            self._release_session()

    def holders(self) -> Holders:
        """Who holds a permit now (a read-only call)."""
        out = self.client.call(MODULE, "holders", {"name": self.name}, read_only=True)
        holders = [Holder(h["key"], int(h["lease"]), int(h["token"])) for h in out["holders"]]
        return Holders(int(out["permits"]), holders, int(out["waiting"]))

    def __enter__(self) -> Permit:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()
