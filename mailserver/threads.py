"""One bounded thread pool for blocking work (file I/O, SQLite reads, minio,
password hashing), so nothing blocks the reactor and a slow disk cannot spawn
an unbounded number of threads.

The pool starts on first use and stops when the reactor shuts down.  Code
that needs strict ordering (the SQLite writer) keeps its own one-thread pool
and calls ``deferToThreadPool`` on it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

#: Upper bound on threads doing blocking work for the whole process.
DEFAULT_MAX_THREADS = 16

_pool: ThreadPool | None = None
_max_threads = DEFAULT_MAX_THREADS


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def configure(max_threads: int) -> None:
    """Set the pool size; takes effect now if the pool runs, else at start."""
    global _max_threads
    if max_threads < 1:
        raise ValueError("max_threads must be >= 1")
    _max_threads = max_threads
    if _pool is not None:
        _pool.adjustPoolsize(minthreads=0, maxthreads=max_threads)


def get_pool() -> ThreadPool:
    """The shared pool, started lazily; it is stopped at reactor shutdown."""
    global _pool
    if _pool is None:
        pool = ThreadPool(minthreads=0, maxthreads=_max_threads, name="mailserver-blocking")
        pool.start()
        _pool = pool
        _reactor().addSystemEventTrigger("during", "shutdown", _stop, pool)
    return _pool


def _stop(pool: ThreadPool) -> None:
    global _pool
    if _pool is pool:
        _pool = None
    pool.stop()


async def run_blocking(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run ``fn(*args, **kw)`` in the shared pool and return its result (or
    raise its exception) on the reactor thread."""
    return await deferToThreadPool(_reactor(), get_pool(), fn, *args, **kw)
