"""Typed helpers over Baton's built-in recipe modules, one file per module family.

Each helper is a thin, documented wrapper over :meth:`baton.Client.call`: the JSON shapes are
the modules' own (see each guest's doc header under ``guests/`` in the Baton checkout). Helpers
that hold something (a lock, a permit, a candidacy) attach it to a :class:`~baton.Session`'s
lease: pass one to share it, or let the helper open its own, closed when released.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..client import FOREVER

if TYPE_CHECKING:
    from ..client import Client
    from ..session import Session


def wait_timeout(timeout: float | None) -> float:
    """A helper's `timeout` (None: as long as it takes) as :meth:`Client.call` takes it."""
    return FOREVER if timeout is None else timeout


class Leased:
    """Owns a session when the caller gave none; closes only a session it opened."""

    def __init__(self, client: Client, session: Session | None, ttl: int) -> None:
        self.client = client
        self._given = session
        self._ttl = ttl
        self._own: Session | None = None

    @property
    def session(self) -> Session:
        """The session calls attach to, opened on first use if none was given."""
        if self._given is not None:
            return self._given
        if self._own is None:
            self._own = self.client.session(ttl=self._ttl)
        return self._own

    def _release_session(self) -> None:
        if self._own is not None:
            own, self._own = self._own, None
            own.close()
