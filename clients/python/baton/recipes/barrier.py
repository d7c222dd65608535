"""The `barrier` and `double-barrier` modules, in etcd's ``recipe.Barrier`` and
``recipe.DoubleBarrier`` layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import Leased, wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session


class Barrier:
    """A barrier that blocks :meth:`wait` while it is held.

    :meth:`hold` attaches the barrier to `session`'s lease when one is given, so a holder that
    dies releases it; without one it lasts until :meth:`release`.
    """

    MODULE = "barrier"

    def __init__(self, client: Client, name: str, session: Session | None = None) -> None:
        self.client = client
        self.name = name
        self.session = session

    def _call(self, function: str, **kw: Any) -> Any:
        return self.client.call(self.MODULE, function, {"name": self.name}, **kw)

    def hold(self) -> bool:
        """Raises the barrier; whether this call created it (False: it was up already)."""
        lease = self.session.lease if self.session else None
        return bool(self._call("hold", lease=lease)["created"])

    def release(self) -> bool:
        """Lowers the barrier, waking every waiter; whether it was up."""
        return bool(self._call("release")["released"])

    def wait(self, timeout: float | None = None) -> None:
        """Returns once the barrier is down (at once if it is); at most `timeout` seconds."""
        self._call("wait", read_only=True, timeout=wait_timeout(timeout))


class DoubleBarrier(Leased):
    """`count` participants :meth:`enter` together and :meth:`leave` together.

    ``with client.double_barrier("phase", 3):`` enters (waiting for the others) and leaves on
    exit (waiting for the others to leave). Participants must agree on `count`.
    """

    MODULE = "double-barrier"

    def __init__(self, client: Client, name: str, count: int, session: Session | None = None, ttl: int = 10) -> None:
        super().__init__(client, session, ttl)
        self.name = name
        self.count = count

    def _call(self, function: str, input: dict[str, Any], timeout: float | None) -> Any:
        return self.client.call(self.MODULE, function, input, lease=self.session.lease, timeout=timeout)

    def enter(self, timeout: float | None = None) -> str:
        """Waits until `count` participants entered; this one's key."""
        out = self._call("enter", {"name": self.name, "count": self.count}, wait_timeout(timeout))
        return str(out["key"])

    def leave(self, timeout: float | None = None) -> None:
        """Waits until every participant left."""
        try:
            self._call("leave", {"name": self.name}, wait_timeout(timeout))
        finally:
            self._release_session()

    def __enter__(self) -> DoubleBarrier:
        self.enter()
        return self

    def __exit__(self, *_: object) -> None:
        self.leave()
