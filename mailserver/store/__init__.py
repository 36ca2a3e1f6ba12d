"""Storage backends behind the interfaces in ``mailserver.store.interfaces``.

``open_storage`` builds a backend from the ``[storage]`` table of the
configuration, e.g. ``{"backend": "embedded", "embedded": {"path": "/var/lib/mail"}}``.
A backend is one entry in ``BACKENDS``: an async opener taking that table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mailserver.store.interfaces import Storage

Opener = Callable[[Mapping[str, Any]], Awaitable[Storage]]


async def _open_embedded(storage_config: Mapping[str, Any]) -> Storage:
    from mailserver.store.sqlite import open_embedded

    section = storage_config.get("embedded") or {}
    path = section.get("path")
    if not path:
        raise ValueError("[storage.embedded] needs a 'path'")
    return await open_embedded(str(path))


async def _open_cluster(storage_config: Mapping[str, Any]) -> Storage:
    from mailserver.store.cluster import open_cluster_storage

    return await open_cluster_storage(storage_config)


#: backend name -> opener.  A new backend is one more line here.
BACKENDS: dict[str, Opener] = {
    "embedded": _open_embedded,
    "cluster": _open_cluster,
}


async def open_storage(storage_config: Mapping[str, Any]) -> Storage:
    """Open the backend named by ``storage_config["backend"]`` (default
    ``embedded``).  Raises ValueError for an unknown backend or bad config."""
    name = storage_config.get("backend", "embedded")
    opener = BACKENDS.get(name)
    if opener is None:
        raise ValueError(f"unknown storage backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    return await opener(storage_config)
