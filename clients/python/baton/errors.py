"""Errors as exception kinds a caller can catch, from the gRPC status Baton answered.

Every exception is a :class:`BatonError` carrying ``code`` (a ``grpc.StatusCode``) and
``message`` (the server's text, unchanged). :func:`from_status` is the one table from a
(code, message) pair to a kind; the first matching row wins:

=========================  =======================================================  =======================
code                       message                                                  kind
=========================  =======================================================  =======================
FAILED_PRECONDITION        contains ``stale fencing token`` (lock, semaphore)       StaleFencingToken
FAILED_PRECONDITION        ``election: not leader``                                 NotLeader
FAILED_PRECONDITION        ``queue <q>: reservation <token> ...`` (ack/nack late)   ReservationLost
any                        contains ``requested lease not found``                   LeaseNotFound
FAILED_PRECONDITION        contains ``: unknown function``                          NotFound (function)
NOT_FOUND                  (e.g. ``module not found: <name>``)                      NotFound (module)
FAILED_PRECONDITION        anything else (a module's own refusal, a write in a      FailedPrecondition
                           read-only call, a trap)
RESOURCE_EXHAUSTED         (fuel, guest memory, output size)                        ResourceExhausted
INVALID_ARGUMENT           (bad fuel, oversized input, bad module)                  InvalidArgument
DEADLINE_EXCEEDED          (the call's own deadline passed, e.g. a wait ran out)    DeadlineExceeded
CANCELLED                  ``Timeout expired`` (the server's side of that deadline) DeadlineExceeded
UNAVAILABLE                (member unreachable, no leader, request timed out)       Unavailable
anything else              (CANCELLED, UNKNOWN, INTERNAL, ...)                      BatonError
=========================  =======================================================  =======================

A guest reports a lease that ended as ``etcdserver: requested lease not found`` with
FAILED_PRECONDITION, the Lease service with NOT_FOUND: both are :class:`LeaseNotFound`, which is
a :class:`LeaseLost` (what a :class:`~baton.Session` reports when its keep-alive finds the lease
gone). The more specific kinds subclass the code's kind, so ``except FailedPrecondition`` also
catches a stale token.
"""

from __future__ import annotations

import grpc

__all__ = [
    "BatonError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "LeaseLost",
    "LeaseNotFound",
    "NotFound",
    "NotLeader",
    "ReservationLost",
    "ResourceExhausted",
    "StaleFencingToken",
    "Unavailable",
    "from_rpc_error",
    "from_status",
]


class BatonError(Exception):
    """Any failure of a Baton call: ``code`` is the gRPC status code, ``message`` its text."""

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        super().__init__(f"{code.name if code else 'CLIENT'}: {message}")
        self.code = code
        self.message = message


class Unavailable(BatonError):
    """No member could serve the call (unreachable, no leader, or the request timed out).

    For a writing call this means the outcome is unknown: it may or may not have been applied.
    """


class DeadlineExceeded(BatonError):
    """The call's deadline passed, for example while it waited for a lock or an item."""


class InvalidArgument(BatonError):
    """The request was malformed: a bad module, fuel out of range, an oversized input."""


class ResourceExhausted(BatonError):
    """A module ran out of fuel or memory, or produced too large an output."""


class NotFound(BatonError):
    """No such module (NOT_FOUND), or the module has no such function."""


class FailedPrecondition(BatonError):
    """The module refused the call; nothing it would have written was written."""


class StaleFencingToken(FailedPrecondition):
    """A fenced write named a token that no longer holds the lock or permit."""


class NotLeader(FailedPrecondition):
    """An election call that needs leadership came from a candidate that does not lead."""


class ReservationLost(FailedPrecondition):
    """A queue ack/nack named a reservation that timed out, ended, or was settled already."""


class LeaseLost(BatonError):
    """A session's lease ended (revoked, expired, or not renewed in time)."""


class LeaseNotFound(LeaseLost):
    """The server no longer knows the lease a call named (``requested lease not found``)."""


LEASE_NOT_FOUND = "requested lease not found"
STALE_TOKEN = "stale fencing token"
ELECTION_NOT_LEADER = "election: not leader"
UNKNOWN_FUNCTION = ": unknown function"
#: What Baton's server (tonic) answers, as CANCELLED, when the deadline the client sent passes
#: there first: the same event as the client's DEADLINE_EXCEEDED, whichever side notices first.
SERVER_TIMEOUT = "Timeout expired"

_BY_CODE: dict[grpc.StatusCode, type[BatonError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def _is_reservation_lost(message: str) -> bool:
    # "queue jobs: reservation 57 is not held (...)" / "... timed out ..." / "... ended ..."
    head, _, rest = message.partition(": reservation ")
    return head.startswith("queue ") and bool(rest)


def kind_of(code: grpc.StatusCode, message: str) -> type[BatonError]:
    """The exception class for a status (the table in this module's docstring)."""
    precondition = code == grpc.StatusCode.FAILED_PRECONDITION
    if precondition and STALE_TOKEN in message:
        return StaleFencingToken
    if precondition and message == ELECTION_NOT_LEADER:
        return NotLeader
    if precondition and _is_reservation_lost(message):
        return ReservationLost
    if LEASE_NOT_FOUND in message:
        return LeaseNotFound
    if precondition and UNKNOWN_FUNCTION in message:
        return NotFound
    if code == grpc.StatusCode.CANCELLED and message == SERVER_TIMEOUT:
        return DeadlineExceeded
    return _BY_CODE.get(code, BatonError)


def from_status(code: grpc.StatusCode, message: str) -> BatonError:
    """The exception for a status code and message."""
    return kind_of(code, message)(code, message)


def from_rpc_error(error: grpc.RpcError) -> BatonError:
    """The exception for a failed gRPC call (``grpc.RpcError`` raised by a stub)."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    exc = from_status(code, details)
    exc.__cause__ = error
    return exc
