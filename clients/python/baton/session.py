"""`Session`: a lease granted once and kept alive by a background thread until closed or lost.

Recipes attach their keys to a session's lease, so whatever a process holds goes when it dies.
The thread renews every ``ttl / RENEWALS_PER_TTL`` seconds through the client (failing over like
any call). The lease is *lost* — ``session.lost`` is set and ``on_lost`` runs once, in the
keep-alive thread — when a renewal answers TTL 0 (the lease was revoked or expired) or when no
renewal has succeeded for a whole TTL, after which the server may have let it expire. A lost
session is not renewed again: its keys are gone or about to be, and a new session is needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import errors

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Session"]

#: Renewals per TTL: a third, as etcd's clients do, leaves two retries before the lease ends.
RENEWALS_PER_TTL = 3
#: Shortest pause between renewals (also the retry pause after a failed one), in seconds.
RENEW_INTERVAL_S_MIN = 0.2


class Session:
    """A kept-alive lease. ``lease`` is its id; ``lost`` a ``threading.Event`` set when it is lost.

    Use as a context manager, or call :meth:`close` (which revokes the lease, releasing every key
    attached to it).
    """

    def __init__(
        self,
        client: Client,
        ttl: int = 10,
        on_lost: Callable[[errors.LeaseLost], None] | None = None,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.lease, granted = client.grant(ttl)
        self.lost = threading.Event()
        #: Why the session was lost, once it is.
        self.lost_reason: errors.LeaseLost | None = None
        self._on_lost = on_lost
        self._closed = threading.Event()
        self._confirmed_at = time.monotonic()
        self._confirmed_ttl = granted
        self._thread = threading.Thread(target=self._keep_alive, name=f"baton-session-{self.lease:x}", daemon=True)
        self._thread.start()

    def _interval(self) -> float:
        return max(self.ttl / RENEWALS_PER_TTL, RENEW_INTERVAL_S_MIN)

    def _keep_alive(self) -> None:
        while not self._closed.wait(self._interval()):
            try:
                ttl = self.client.keep_alive_once(self.lease, timeout=self._interval())
            except ValueError:
                return  # the client was closed under us: nobody is left to tell
            except errors.BatonError as error:
                if isinstance(error, errors.LeaseNotFound):
                    return self._lose(f"lease {self.lease:x} not found: {error.message}")
                if time.monotonic() - self._confirmed_at >= self._confirmed_ttl:
                    return self._lose(f"lease {self.lease:x} not renewed for {self._confirmed_ttl}s: {error.message}")
                continue
            if ttl <= 0:
                return self._lose(f"lease {self.lease:x} ended (revoked or expired)")
            self._confirmed_at, self._confirmed_ttl = time.monotonic(), ttl

    def _lose(self, why: str) -> None:
        if self._closed.is_set():
            return
        self.lost_reason = errors.LeaseLost(None, why)
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost(self.lost_reason)

    def check(self) -> None:
        """Raises :class:`~baton.errors.LeaseLost` if the session is lost."""
        if self.lost.is_set() and self.lost_reason is not None:
            raise self.lost_reason

    def close(self) -> None:
        """Stops renewing and revokes the lease (unless it is already lost)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if not self.lost.is_set():
            try:
                self.client.revoke(self.lease)
            except errors.LeaseNotFound:
                pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "closed" if self._closed.is_set() else "alive"
        return f"Session(lease={self.lease:#x}, ttl={self.ttl}, {state})"
