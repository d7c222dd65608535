"""The `registry` module: service registration (an instance lives as long as its session's
lease) and discovery (:meth:`Registry.list`, then :meth:`Registry.changes` in a loop, which
:meth:`Registry.watch` does for you). The layout is etcd's gRPC naming, so etcd's endpoints
manager and resolver see the same instances."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import errors
from . import wait_timeout

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session

MODULE = "registry"
#: Words of the module's refusal when `since_revision` is older than what it remembers.
COMPACTED = "is compacted"


@dataclass(frozen=True)
class Instance:
    instance: str
    addr: str
    meta: Any
    lease: int
    mod_revision: int

    @staticmethod
    def of(out: dict[str, Any]) -> Instance:
        return Instance(out["instance"], out.get("addr", out["instance"]), out.get("meta"), int(out.get("lease", 0)), int(out.get("mod_revision", 0)))


@dataclass(frozen=True)
class Listing:
    """Every instance of a service as of `revision`."""

    revision: int
    instances: dict[str, Instance]


@dataclass(frozen=True)
class Changes:
    """What came (added or updated) and went after a revision, as of `revision`."""

    revision: int
    came: list[Instance]
    went: list[str]


class Registry:
    """The instances of service `service`."""

    def __init__(self, client: Client, service: str) -> None:
        self.client = client
        self.service = service

    def register(self, instance: str, session: Session, meta: Any = None) -> str:
        """Registers (or updates) `instance` until `session`'s lease ends; its key."""
        input: dict[str, Any] = {"service": self.service, "instance": instance}
        if meta is not None:
            input["meta"] = meta
        return str(self.client.call(MODULE, "register", input, lease=session.lease)["key"])

    def deregister(self, instance: str) -> bool:
        """Removes `instance`; whether it was registered."""
        out = self.client.call(MODULE, "deregister", {"service": self.service, "instance": instance})
        return bool(out["deregistered"])

    def list(self) -> Listing:
        """Every instance now (a read-only call)."""
        out = self.client.call(MODULE, "list", {"service": self.service}, read_only=True)
        return Listing(int(out["revision"]), {i["instance"]: Instance.of(i) for i in out["instances"]})

    discover = list

    def changes(self, since_revision: int, timeout: float | None = None) -> Changes:
        """What changed after `since_revision`, waiting for a change (at most `timeout` s)."""
        input = {"service": self.service, "since_revision": since_revision}
        out = self.client.call(MODULE, "changes", input, timeout=wait_timeout(timeout))
        return Changes(int(out["revision"]), [Instance.of(i) for i in out["came"]], list(out["went"]))

    def watch(self, timeout: float | None = None) -> Iterator[dict[str, Instance]]:
        """Yields the service's instances now, then again after every change.

        Each wait lasts at most `timeout` s (None: no limit). When the registry has forgotten
        departures since the last view, the view is rebuilt from a fresh :meth:`list`.
        """
        listing = self.list()
        view, revision = dict(listing.instances), listing.revision
        yield dict(view)
        while True:
            try:
                changes = self.changes(revision, timeout=timeout)
            except errors.FailedPrecondition as e:
                if COMPACTED not in e.message:
                    raise
                listing = self.list()
                view, revision = dict(listing.instances), listing.revision
                yield dict(view)
                continue
            for gone in changes.went:
                view.pop(gone, None)
            for came in changes.came:
                view[came.instance] = came
            revision = changes.revision
            yield dict(view)
