"""The `rwlock` module: many readers or one writer, in etcd's ``recipe.RWMutex`` layout.

``rw = client.rwlock("cfg")``; ``with rw.read(): ...`` or ``with rw.write(): ...``. A writer
is never starved by readers that arrive after it. One session holds at most one read and one
write key per name: taking both with one session deadlocks (as in etcd).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import Leased, wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session

MODULE = "rwlock"


class _Side:
    """One side (read or write) of a RWLock, as a context manager."""

    def __init__(self, rw: RWLock, take: str, give: str, timeout: float | None) -> None:
        self._rw, self._take, self._give, self._timeout = rw, take, give, timeout
        self.key: str | None = None

    def __enter__(self) -> _Side:
        self.key = self._rw._call(self._take, wait_timeout(self._timeout))["key"]
        return self

    def __exit__(self, *_: object) -> None:
        self._rw._call(self._give, None)
        self.key = None


class RWLock(Leased):
    """A reader-writer lock on `name`; without a session it keeps its own lease of `ttl` s."""

    def __init__(self, client: Client, name: str, session: Session | None = None, ttl: int = 10) -> None:
        super().__init__(client, session, ttl)
        self.name = name

    def _call(self, function: str, timeout: float | None) -> Any:
        return self.client.call(MODULE, function, {"name": self.name}, lease=self.session.lease, timeout=timeout)

    def read(self, timeout: float | None = None) -> _Side:
        """Shared access: waits while a writer holds or waits ahead (at most `timeout` s)."""
        return _Side(self, "rlock", "runlock", timeout)

    def write(self, timeout: float | None = None) -> _Side:
        """Exclusive access: waits for every earlier reader and writer (at most `timeout` s)."""
        return _Side(self, "lock", "unlock", timeout)

    def close(self) -> None:
        """Closes the lock's own session, if it opened one."""
        self._release_session()
