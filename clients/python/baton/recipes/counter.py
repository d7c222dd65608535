"""The `counter` module: atomic adds to counters stored as decimal strings (any etcd client
reads them), and a countdown latch (`wait_at_least`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import wait_timeout

if TYPE_CHECKING:
    from ..client import Client

MODULE = "counter"


class Counter:
    """The counter at key `key` (0 until first added to)."""

    def __init__(self, client: Client, key: str) -> None:
        self.client = client
        self.key = key

    def add(self, by: int = 1) -> int:
        """Adds `by` (may be negative); the new value."""
        return int(self.client.call(MODULE, "add", {"keys": [self.key], "by": by})[self.key])

    def get(self) -> int:
        """The current value (a read-only call)."""
        return int(self.client.call(MODULE, "get", {"keys": [self.key]}, read_only=True)[self.key])

    def wait_at_least(self, n: int, timeout: float | None = None) -> int:
        """Waits until the value reaches `n` (at most `timeout` s); the value then."""
        out = self.client.call(
            MODULE, "get", {"keys": [self.key], "at_least": n}, read_only=True, timeout=wait_timeout(timeout)
        )
        return int(out[self.key])
