"""Module calls against a real cluster: list/describe/deploy/delete, JSON and raw calls, and each
error kind with the status it comes from."""

from __future__ import annotations

import grpc
import pytest

import baton
from baton import errors
from cluster import REPO

FIXTURE = REPO / "host" / "wasm" / "fixtures" / "counter-v0.1.wasm"


def test_list_and_describe_show_the_builtins(client: baton.Client) -> None:
    names = {m.name for m in client.list()}
    assert {"counter", "lock", "queue", "registry"} <= names
    info = client.describe("counter")
    assert info.name == "counter" and info.latest.builtin and len(info.latest.hash) == 64


def test_call_is_json_in_and_out_and_raw_when_asked(client: baton.Client, name: str) -> None:
    assert client.call("counter", "add", {"keys": [name], "by": 2}) == {name: 2}
    raw = client.call("counter", "get", f'{{"keys":["{name}"]}}'.encode(), read_only=True, raw=True)
    assert raw == f'{{"{name}":2}}'.encode()
    assert client.get(name) == b"2"


def test_deploy_call_describe_delete(client: baton.Client, name: str) -> None:
    # A real component kept in the checkout (a contract-0.1 counter), deployed from its path.
    hash_hex, version = client.deploy(name, FIXTURE)
    assert len(hash_hex) == 64 and version >= 1
    info = client.describe(name)
    assert info.latest.hash == hash_hex and not info.latest.builtin
    assert name in {m.name for m in client.list()}
    assert client.call(name, "add", {"keys": [f"{name}-k"], "by": 4}) == {f"{name}-k": 4}
    assert client.delete(name) == 1
    with pytest.raises(errors.NotFound):
        client.describe(name)
    with pytest.raises(errors.NotFound):
        client.call(name, "add", {"keys": [f"{name}-k"], "by": 1})
    # Its version stays callable by hash.
    assert client.call("", "add", {"keys": [f"{name}-k"], "by": 1}, hash=hash_hex) == {f"{name}-k": 5}
    with pytest.raises(errors.InvalidArgument) as refused:
        client.deploy(name, b"not wasm")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_module_and_function_are_not_found(client: baton.Client) -> None:
    with pytest.raises(errors.NotFound) as missing:
        client.call("no-such-module", "f", {})
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert "module not found: no-such-module" in missing.value.message
    with pytest.raises(errors.NotFound) as function:
        client.call("counter", "nope", {})
    assert function.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "unknown function" in function.value.message


def test_refusals_map_to_their_kinds(client: baton.Client, name: str) -> None:
    with pytest.raises(errors.FailedPrecondition) as bad_input:
        client.call("counter", "add", {"keys": "not a list"})
    assert type(bad_input.value) is errors.FailedPrecondition
    with pytest.raises(errors.FailedPrecondition) as writes:
        client.call("counter", "add", {"keys": [name], "by": 1}, read_only=True)
    assert writes.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(errors.ResourceExhausted) as fuel:
        client.call("counter", "add", {"keys": [name], "by": 1}, fuel=10)
    assert "fuel" in fuel.value.message
    with pytest.raises(errors.InvalidArgument):
        client.call("counter", "get", {"keys": [name]}, fuel=10**12)


def test_a_wait_that_runs_out_is_deadline_exceeded(client: baton.Client, name: str) -> None:
    with pytest.raises(errors.DeadlineExceeded) as late:
        client.counter(name).wait_at_least(1, timeout=0.5)
    # The client's deadline, or the server's copy of it (tonic: CANCELLED "Timeout expired").
    assert late.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def test_status_table_is_precise() -> None:
    code = grpc.StatusCode
    cases = [
        (code.FAILED_PRECONDITION, "lock L: stale fencing token 4 (the holder's is 9)", errors.StaleFencingToken),
        (code.FAILED_PRECONDITION, "semaphore S: stale fencing token 4 (no holder has it)", errors.StaleFencingToken),
        (code.FAILED_PRECONDITION, "election: not leader", errors.NotLeader),
        (code.FAILED_PRECONDITION, "queue jobs: reservation 57 timed out: the item is redelivered", errors.ReservationLost),
        (code.FAILED_PRECONDITION, "etcdserver: requested lease not found", errors.LeaseNotFound),
        (code.NOT_FOUND, "etcdserver: requested lease not found", errors.LeaseNotFound),
        (code.FAILED_PRECONDITION, 'lock: unknown function "x" (try "acquire")', errors.NotFound),
        (code.NOT_FOUND, "module not found: m", errors.NotFound),
        (code.FAILED_PRECONDITION, "guest trapped: unreachable", errors.FailedPrecondition),
        (code.RESOURCE_EXHAUSTED, "fuel exhausted after 10 units", errors.ResourceExhausted),
        (code.INVALID_ARGUMENT, "fuel must be between 1 and 1000000000", errors.InvalidArgument),
        (code.DEADLINE_EXCEEDED, "Deadline Exceeded", errors.DeadlineExceeded),
        (code.CANCELLED, "Timeout expired", errors.DeadlineExceeded),
        (code.CANCELLED, "Cancelled", errors.BatonError),
        (code.UNAVAILABLE, "etcdserver: no leader", errors.Unavailable),
        (code.UNKNOWN, "mutex: session is expired", errors.BatonError),
    ]
    for status, message, kind in cases:
        exc = errors.from_status(status, message)
        assert type(exc) is kind, (status, message, type(exc))
        assert (exc.code, exc.message) == (status, message)
    assert issubclass(errors.LeaseNotFound, errors.LeaseLost)
    assert issubclass(errors.StaleFencingToken, errors.FailedPrecondition)
