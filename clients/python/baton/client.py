"""`Client`: one connection at a time to a Baton cluster, failing over across its endpoints.

Layout: this file holds the connection and failover rule and the plain calls (modules, a few KV
and lease calls the recipes and tests need); ``session.py`` keeps a lease alive; ``recipes/``
has one small typed class per built-in module, each built on :meth:`Client.call`.

Failover rule. The client talks to one member (``client.endpoint``) until a call fails with
UNAVAILABLE; then it moves to the next endpoint and, when that is safe, sends the call again,
until the call's deadline passes or every endpoint failed ``FAILOVER_ROUNDS`` times in a row. Safe
means the call cannot be applied twice:

- calls that change nothing (``list``, ``describe``, read-only module calls, lease TTL queries,
  KV reads, keep-alive renewals, lease revokes) are resent after any UNAVAILABLE;
- calls that may write (module calls that are not read-only, deploy, delete, lease grants,
  puts) are resent only when the failure proves nothing was sent or proposed: the channel
  could not connect to the member at all, or the member answered etcd's
  ``etcdserver: no leader`` (Baton's promise that the request was not proposed). Any other
  UNAVAILABLE of a writing call (the connection broke after sending, ``request timed out``)
  raises :class:`~baton.errors.Unavailable`: the write may or may not have been applied, and
  only the caller knows whether repeating it is harmless. (etcd's own clients retry only
  failures from before the request was sent, for the same reason.)
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from . import errors
from ._pb.baton.v1 import modules_pb2, modules_pb2_grpc
from ._pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["Client", "ModuleInfo", "ModuleVersion", "FOREVER"]

#: Pass as a ``timeout`` to wait without a deadline.
FOREVER = math.inf
#: Deadline of a call that names none, in seconds.
TIMEOUT_S_DEFAULT = 5.0
#: How many times every endpoint may fail in a row before a call gives up.
FAILOVER_ROUNDS = 3
#: Pause between rounds of failover, so a cluster electing a leader gets a moment.
FAILOVER_ROUND_PAUSE_S = 0.25
#: Largest message accepted from a member (module outputs and KV ranges stay far below it).
MESSAGE_BYTES_MAX = 64 * 1024 * 1024
#: UNAVAILABLE details that mean the request never reached a member.
NOT_SENT_DETAILS = ("failed to connect", "connection refused", "dns resolution failed")
#: The member's word that it did not propose the request (etcd's ErrNoLeader).
NO_LEADER = "etcdserver: no leader"

T = TypeVar("T")


class ModuleVersion:
    """One deployed version of a module."""

    def __init__(self, pb: modules_pb2.ModuleVersion) -> None:
        self.version: int = pb.version
        self.hash: str = pb.hash
        self.size_bytes: int = pb.size_bytes
        self.exports: list[str] = list(pb.exports)
        self.builtin: bool = pb.builtin

    def __repr__(self) -> str:
        return f"ModuleVersion(version={self.version}, hash={self.hash[:12]}…, builtin={self.builtin})"


class ModuleInfo:
    """A module name and its versions, oldest first (the last is what a call by name runs)."""

    def __init__(self, pb: modules_pb2.ModuleInfo) -> None:
        self.name: str = pb.name
        self.versions: list[ModuleVersion] = [ModuleVersion(v) for v in pb.versions]

    @property
    def latest(self) -> ModuleVersion:
        return self.versions[-1]

    def __repr__(self) -> str:
        return f"ModuleInfo(name={self.name!r}, versions={len(self.versions)})"


def _target(endpoint: str) -> str:
    """`host:port` for gRPC from `host:port` or `http://host:port`."""
    endpoint = endpoint.strip()
    for scheme in ("http://", "grpc://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    if endpoint.startswith("https://"):
        raise ValueError(f"TLS endpoints are not supported yet: {endpoint}")
    return endpoint.rstrip("/")


def _not_sent(error: grpc.RpcError) -> bool:
    """Whether a failed call provably never reached a member's proposal path."""
    if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    return details == NO_LEADER or any(d in details for d in NOT_SENT_DETAILS)


def _encode(value: Any, raw: bool) -> bytes:
    if raw:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("raw=True takes bytes")
        return bytes(value)
    return json.dumps(value, separators=(",", ":")).encode()


class _Member:
    """The channel and stubs of one endpoint, made on first use."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
                ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ],
        )
        self.modules = modules_pb2_grpc.ModulesStub(self.channel)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)


class Client:
    """A Baton client over a list of endpoints (``"127.0.0.1:2379"`` or ``"http://..."``).

    ``timeout`` is the deadline, in seconds, of every call that names none. The client is safe
    to share between threads. Close it (or use it as a context manager) to release channels.
    """

    def __init__(self, endpoints: str | Sequence[str], timeout: float = TIMEOUT_S_DEFAULT) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        targets = [_target(e) for e in endpoints if e.strip()]
        if not targets:
            raise ValueError("no endpoints")
        self.timeout = timeout
        self._members = [_Member(t) for t in targets]
        self._current = 0
        self._lock = threading.Lock()

    # -- connection and failover -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now (it changes on failover)."""
        with self._lock:
            return self._members[self._current].target

    @property
    def endpoints(self) -> list[str]:
        return [m.target for m in self._members]

    def _member(self) -> tuple[int, _Member]:
        with self._lock:
            return self._current, self._members[self._current]

    def _fail_over(self, index: int) -> None:
        """Moves on from member `index`, unless another thread already did."""
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % len(self._members)

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _rpc(
        self,
        call: Callable[[_Member, float | None], T],
        *,
        safe: bool,
        timeout: float | None = None,
    ) -> T:
        """Runs `call(member, seconds_left)` under the failover rule (see the module doc)."""
        deadline = self._deadline(timeout)
        failures = 0
        while True:
            index, member = self._member()
            left = None if deadline == math.inf else max(deadline - time.monotonic(), 0.0)
            try:
                return call(member, left)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code != grpc.StatusCode.UNAVAILABLE or not (safe or _not_sent(error)):
                    raise errors.from_rpc_error(error) from None
                failures += 1
                self._fail_over(index)
                out_of_rounds = failures >= FAILOVER_ROUNDS * len(self._members)
                if out_of_rounds or time.monotonic() >= deadline:
                    raise errors.from_rpc_error(error) from None
                if failures % len(self._members) == 0:
                    time.sleep(min(FAILOVER_ROUND_PAUSE_S, max(deadline - time.monotonic(), 0)))

    def close(self) -> None:
        """Closes every channel; calls after this fail."""
        for member in self._members:
            member.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- modules -----------------------------------------------------------------------------

    def deploy(self, name: str, component: bytes | str | Path, timeout: float | None = None) -> tuple[str, int]:
        """Stores a component (bytes, or a path to a ``.wasm`` file) as the next version of
        `name`; returns its SHA-256 (hex) and version number."""
        if isinstance(component, (str, Path)):
            component = Path(component).read_bytes()
        req = modules_pb2.DeployRequest(name=name, component=bytes(component))
        resp = self._rpc(lambda m, t: m.modules.Deploy(req, timeout=t), safe=False, timeout=timeout)
        return resp.hash, resp.version

    def list(self, timeout: float | None = None) -> list[ModuleInfo]:
        """Every deployed module with its versions."""
        req = modules_pb2.ListRequest()
        resp = self._rpc(lambda m, t: m.modules.List(req, timeout=t), safe=True, timeout=timeout)
        return [ModuleInfo(i) for i in resp.modules]

    def describe(self, name: str, timeout: float | None = None) -> ModuleInfo:
        """One module's versions; :class:`~baton.errors.NotFound` when there is none."""
        req = modules_pb2.DescribeRequest(name=name)
        resp = self._rpc(lambda m, t: m.modules.Describe(req, timeout=t), safe=True, timeout=timeout)
        return ModuleInfo(resp)

    def delete(self, name: str, timeout: float | None = None) -> int:
        """Removes a module's name (its versions stay callable by hash); how many versions it had."""
        req = modules_pb2.DeleteRequest(name=name)
        resp = self._rpc(lambda m, t: m.modules.Delete(req, timeout=t), safe=False, timeout=timeout)
        return resp.versions

    def call(
        self,
        module: str,
        function: str,
        input: Any = None,
        lease: int | None = None,
        read_only: bool = False,
        timeout: float | None = None,
        raw: bool = False,
        fuel: int = 0,
        hash: str = "",
    ) -> Any:
        """Runs `function` of `module` as one atomic transition of the store.

        `input` is encoded as JSON (a dict, list, str, number or None) unless `raw`, when it
        is bytes and the output is returned as bytes; otherwise the output is decoded from JSON.
        `lease` attaches the call to a lease (an id, or anything with a ``lease`` attribute
        such as a :class:`~baton.Session`). `read_only` runs it on the serving member without a
        log entry (it may not write). `timeout` bounds the whole call, waits included: ``None``
        is the client's default, :data:`FOREVER` waits without a deadline. `fuel` 0 is the
        server's default budget; `hash` calls that exact version instead of the name's latest.
        """
        lease_id = getattr(lease, "lease", lease) or 0
        req = modules_pb2.InvokeRequest(
            name=module,
            hash=hash,
            function=function,
            input=_encode(input, raw),
            lease=lease_id,
            fuel=fuel,
            read_only=read_only,
        )
        resp = self._rpc(lambda m, t: m.modules.Invoke(req, timeout=t), safe=read_only, timeout=timeout)
        if raw:
            return resp.output
        return json.loads(resp.output) if resp.output else None

    # -- leases and sessions -----------------------------------------------------------------

    def grant(self, ttl: int, timeout: float | None = None) -> tuple[int, int]:
        """Grants a lease of `ttl` seconds; its id and the TTL the server granted."""
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        resp = self._rpc(lambda m, t: m.lease.LeaseGrant(req, timeout=t), safe=False, timeout=timeout)
        if resp.error:
            raise errors.BatonError(None, resp.error)
        return resp.ID, resp.TTL

    def revoke(self, lease: int, timeout: float | None = None) -> None:
        """Revokes a lease, deleting every key attached to it."""
        req = rpc_pb2.LeaseRevokeRequest(ID=lease)
        self._rpc(lambda m, t: m.lease.LeaseRevoke(req, timeout=t), safe=True, timeout=timeout)

    def time_to_live(self, lease: int, timeout: float | None = None) -> int:
        """Seconds left on a lease; -1 when it does not exist."""
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lease)
        resp = self._rpc(lambda m, t: m.lease.LeaseTimeToLive(req, timeout=t), safe=True, timeout=timeout)
        return resp.TTL

    def keep_alive_once(self, lease: int, timeout: float | None = None) -> int:
        """Renews a lease once; the TTL it was renewed to, 0 when the lease no longer exists."""

        def renew(member: _Member, left: float | None) -> int:
            # One request per stream: a renewal fails over like any other call.
            replies = member.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), timeout=left)
            for reply in replies:
                return reply.TTL
            return 0

        return self._rpc(renew, safe=True, timeout=timeout)

    def session(self, ttl: int = 10, on_lost: Callable[[errors.LeaseLost], None] | None = None) -> Session:
        """A lease of `ttl` seconds kept alive in the background (see :class:`~baton.Session`)."""
        from .session import Session

        return Session(self, ttl=ttl, on_lost=on_lost)

    # -- a little of etcd's KV, for what recipes write --------------------------------------

    def get(self, key: str | bytes, timeout: float | None = None) -> bytes | None:
        """The value of `key` (a linearizable read), or None."""
        req = rpc_pb2.RangeRequest(key=_bytes(key))
        resp = self._rpc(lambda m, t: m.kv.Range(req, timeout=t), safe=True, timeout=timeout)
        return resp.kvs[0].value if resp.kvs else None

    def get_prefix(self, prefix: str | bytes, timeout: float | None = None) -> dict[bytes, bytes]:
        """Every key under `prefix` and its value."""
        start = _bytes(prefix)
        req = rpc_pb2.RangeRequest(key=start, range_end=_prefix_end(start))
        resp = self._rpc(lambda m, t: m.kv.Range(req, timeout=t), safe=True, timeout=timeout)
        return {kv.key: kv.value for kv in resp.kvs}

    def put(self, key: str | bytes, value: str | bytes, lease: int = 0, timeout: float | None = None) -> int:
        """Writes `key`; the revision it created."""
        req = rpc_pb2.PutRequest(key=_bytes(key), value=_bytes(value), lease=lease)
        resp = self._rpc(lambda m, t: m.kv.Put(req, timeout=t), safe=False, timeout=timeout)
        return resp.header.revision

    def status(self, timeout: float | None = None) -> rpc_pb2.StatusResponse:
        """Maintenance.Status of the member in use."""
        req = rpc_pb2.StatusRequest()
        return self._rpc(lambda m, t: m.maintenance.Status(req, timeout=t), safe=True, timeout=timeout)

    # -- recipes -----------------------------------------------------------------------------

    def lock(self, name: str, session: Session | None = None, ttl: int = 10) -> Lock:
        """A fenced mutex: ``with client.lock("db") as held: held.fenced_put(k, v)``."""
        from .recipes.lock import Lock

        return Lock(self, name, session=session, ttl=ttl)

    def try_lock(self, name: str, session: Session | None = None, ttl: int = 10) -> HeldLock | None:
        """Takes `name` if it is free, without waiting; None when someone holds it."""
        return self.lock(name, session=session, ttl=ttl).try_acquire()

    def election(self, name: str, session: Session | None = None, ttl: int = 10) -> Election:
        from .recipes.election import Election

        return Election(self, name, session=session, ttl=ttl)

    def semaphore(self, name: str, permits: int, session: Session | None = None, ttl: int = 10) -> Semaphore:
        from .recipes.semaphore import Semaphore

        return Semaphore(self, name, permits, session=session, ttl=ttl)

    def rwlock(self, name: str, session: Session | None = None, ttl: int = 10) -> RWLock:
        from .recipes.rwlock import RWLock

        return RWLock(self, name, session=session, ttl=ttl)

    def barrier(self, name: str, session: Session | None = None) -> Barrier:
        from .recipes.barrier import Barrier

        return Barrier(self, name, session=session)

    def double_barrier(self, name: str, count: int, session: Session | None = None, ttl: int = 10) -> DoubleBarrier:
        from .recipes.barrier import DoubleBarrier

        return DoubleBarrier(self, name, count, session=session, ttl=ttl)

    def queue(self, name: str) -> Queue:
        from .recipes.queue import Queue

        return Queue(self, name)

    def priority_queue(self, name: str) -> PriorityQueue:
        from .recipes.queue import PriorityQueue

        return PriorityQueue(self, name)

    def registry(self, service: str) -> Registry:
        from .recipes.registry import Registry

        return Registry(self, service)

    def counter(self, key: str) -> Counter:
        from .recipes.counter import Counter

        return Counter(self, key)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix"."""
    trimmed = bytearray(prefix)
    while trimmed:
        if trimmed[-1] < 0xFF:
            trimmed[-1] += 1
            return bytes(trimmed)
        trimmed.pop()
    return b"\0"


# Names used only in annotations above (imported late to keep the import graph acyclic).
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from .recipes.barrier import Barrier, DoubleBarrier
    from .recipes.counter import Counter
    from .recipes.election import Election
    from .recipes.lock import HeldLock, Lock
    from .recipes.queue import PriorityQueue, Queue
    from .recipes.registry import Registry
    from .recipes.rwlock import RWLock
    from .recipes.semaphore import Semaphore
    from .session import Session
