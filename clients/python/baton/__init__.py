"""Baton's Python client: modules, sessions and typed recipes over a Baton cluster.

    import baton
    client = baton.Client(["127.0.0.1:2379", "127.0.0.1:22379"], timeout=5)
    with client.lock("db") as held:
        held.fenced_put("config", "v2")

Layout: ``client.py`` (connection, failover rule, module and lease calls), ``session.py``
(kept-alive leases), ``errors.py`` (exception kinds and the status table), ``recipes/`` (one
helper per built-in module), ``_pb/`` (generated stubs; ``regen.py`` rewrites them).
"""

from . import errors
from .client import FOREVER, Client, ModuleInfo, ModuleVersion
from .errors import (
    BatonError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    LeaseNotFound,
    NotFound,
    NotLeader,
    ReservationLost,
    ResourceExhausted,
    StaleFencingToken,
    Unavailable,
)
from .recipes.barrier import Barrier, DoubleBarrier
from .recipes.counter import Counter
from .recipes.election import Election, Leader
from .recipes.lock import Delete, HeldLock, Lock, Put
from .recipes.queue import Item, PriorityQueue, Queue, Reservation
from .recipes.registry import Registry
from .recipes.rwlock import RWLock
from .recipes.semaphore import Permit, Semaphore
from .session import Session

__all__ = [
    "FOREVER",
    "Barrier",
    "BatonError",
    "Client",
    "Counter",
    "DeadlineExceeded",
    "Delete",
    "DoubleBarrier",
    "Election",
    "FailedPrecondition",
    "HeldLock",
    "InvalidArgument",
    "Item",
    "Leader",
    "LeaseLost",
    "LeaseNotFound",
    "Lock",
    "ModuleInfo",
    "ModuleVersion",
    "NotFound",
    "NotLeader",
    "Permit",
    "PriorityQueue",
    "Put",
    "Queue",
    "RWLock",
    "Registry",
    "Reservation",
    "ResourceExhausted",
    "Semaphore",
    "Session",
    "StaleFencingToken",
    "Unavailable",
    "errors",
]
