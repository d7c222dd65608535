"""The `election` module: leader election in etcd's layout (interoperates with ``etcdctl elect``).

A candidate campaigns with a value and waits until it leads; its leadership carries a fencing
token. ``leader()`` tells who leads now; ``observe()`` yields each new leader (or new value).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors
from . import Leased, wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session

MODULE = "election"
NO_LEADER = "election: no leader"


@dataclass(frozen=True)
class Leader:
    """A leader as the module describes it."""

    key: str
    value: str
    token: int
    mod_revision: int
    version: int
    lease: int

    @staticmethod
    def of(out: dict[str, Any]) -> Leader:
        return Leader(
            out.get("key", out.get("key_hex", "")),
            out.get("value", out.get("value_hex", "")),
            int(out["token"]),
            int(out["mod_revision"]),
            int(out["version"]),
            int(out["lease"]),
        )


class Election(Leased):
    """An election on `name`; without a session it keeps its own lease of `ttl` seconds."""

    def __init__(self, client: Client, name: str, session: Session | None = None, ttl: int = 10) -> None:
        super().__init__(client, session, ttl)
        self.name = name
        #: The fencing token of this candidate's leadership, once `campaign` returned.
        self.token: int | None = None
        self.key: str | None = None

    def _call(self, function: str, input: dict[str, Any], timeout: float | None = None) -> Any:
        return self.client.call(MODULE, function, {"name": self.name, **input}, lease=self.session.lease, timeout=timeout)

    def campaign(self, value: str, timeout: float | None = None) -> int:
        """Waits until this candidate leads (at most `timeout` s); its fencing token.

        A campaign that times out withdraws the candidacy (the server resigns it).
        """
        out = self._call("campaign", {"value": value}, timeout=wait_timeout(timeout))
        self.token, self.key = int(out["token"]), out.get("key", out.get("key_hex"))
        return self.token

    def proclaim(self, value: str) -> int:
        """Changes the leader's value; raises :class:`~baton.errors.NotLeader` unless leading."""
        if self.token is None:
            raise errors.NotLeader(None, "election: campaign first")
        return int(self._call("proclaim", {"token": self.token, "value": value})["revision"])

    def resign(self) -> bool:
        """Gives up leadership (or candidacy); whether there was one to give up."""
        token, self.token, self.key = self.token, None, None
        input: dict[str, Any] = {} if token is None else {"token": token}
        try:
            return bool(self._call("resign", input)["resigned"])
        finally:
            self._release_session()

    def leader(self) -> Leader | None:
        """The current leader, or None when there is none (a read-only call)."""
        try:
            return Leader.of(self.client.call(MODULE, "leader", {"name": self.name}, read_only=True))
        except errors.FailedPrecondition as e:
            if e.message == NO_LEADER:
                return None
            raise

    def observe(self, timeout: float | None = None) -> Iterator[Leader]:
        """Yields the current leader (waiting for one), then every change of leader or value.

        Each wait lasts at most `timeout` seconds (None: no limit), after which the iterator
        raises :class:`~baton.errors.DeadlineExceeded`. Runs read-only on the serving member.
        """
        known: dict[str, Any] = {}
        while True:
            out = self.client.call(
                MODULE, "observe", {"name": self.name, **known}, read_only=True, timeout=wait_timeout(timeout)
            )
            leader = Leader.of(out)
            known = {"mod_revision": leader.mod_revision}
            known["key_hex" if "key_hex" in out else "key"] = out.get("key_hex", out.get("key"))
            yield leader
