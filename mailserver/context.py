"""What every protocol service gets from the process: one object, built once.

``mailserver.service`` builds a ``ServerContext`` from the configuration and
hands it to ``mailserver.smtp.service.services(ctx)``,
``mailserver.imap.service.services(ctx)`` and
``mailserver.pop3.service.services(ctx)``, each returning the Twisted
``IService`` listeners of that protocol.  Tests build a context on an
embedded store in a temporary directory with ``tests.support.make_test_context``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailserver.listener import ConnectionTable

if TYPE_CHECKING:
    from mailserver.accounts import Authenticator
    from mailserver.config import Config
    from mailserver.delivery import Delivery
    from mailserver.store.interfaces import Storage


@dataclass
class ServerContext:
    config: Config
    storage: Storage
    auth: Authenticator
    delivery: Delivery
    #: twisted.internet.ssl.CertificateOptions (server side) or None
    tls: Any = None
    reactor: Any = None
    #: open sessions per client IP, shared by all listeners (the limits)
    connections: ConnectionTable = field(default_factory=ConnectionTable)
    #: per-protocol state shared by that protocol's listeners (e.g. POP3
    #: maildrop locks), keyed by protocol name
    protocol_state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, config: Config, storage: Storage, *, tls: Any = None, reactor: Any = None
    ) -> ServerContext:
        """The context of a process (or test, or benchmark) on ``storage``:
        the authenticator from ``[accounts]`` and the delivery pipeline."""
        from mailserver.accounts import Authenticator
        from mailserver.delivery import Delivery

        if reactor is None:
            from twisted.internet import reactor
        auth = Authenticator.from_config(storage.accounts, config, clock=reactor)
        ctx = cls(config, storage, auth, None, tls, reactor)  # type: ignore[arg-type]
        ctx.delivery = Delivery(ctx)
        return ctx
