"""In-process change notification for the embedded backend.

Sessions subscribe to a mailbox id; the backend publishes after each
committed change.  Callbacks always run on the reactor thread: a publish
from another thread is handed over with ``reactor.callFromThread``.  A
failing callback is logged and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python import log, threadable


class LocalNotifier:
    """``ChangeNotifier`` for one process."""

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}

    def subscribe(self, mailbox_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(mailbox_id)`` after each change; returns the
        unsubscribe function (calling it twice is harmless)."""
        self._subscribers.setdefault(mailbox_id, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(mailbox_id)
            if callbacks is None:
                return
            try:
                callbacks.remove(callback)
            except ValueError:
                return
            if not callbacks:
                del self._subscribers[mailbox_id]

        return unsubscribe

    def publish(self, mailbox_id: str) -> None:
        """Announce a committed change to ``mailbox_id``'s subscribers."""
        if not threadable.isInIOThread():
            self._reactor.callFromThread(self._fire, mailbox_id)
            return
        self._fire(mailbox_id)

    def _fire(self, mailbox_id: str) -> None:
        # Copy: a callback may unsubscribe itself or others.
        for callback in list(self._subscribers.get(mailbox_id, ())):
            try:
                callback(mailbox_id)
            except Exception:
                log.err(None, f"change callback for mailbox {mailbox_id} failed")
