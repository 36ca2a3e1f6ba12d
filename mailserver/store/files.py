"""Content-addressed blob files for the embedded backend.

A blob's key is the SHA-256 hex digest of its bytes and it lives at
``root/ab/cd/<key>``.  ``put`` writes a temporary file in the final
directory, fsyncs it, renames it into place and fsyncs the directory, so once
``put`` returns the blob survives a crash (a crash before leaves at most a
``.tmp`` file that ``keys`` ignores and garbage collection removes).  All
I/O runs in the shared thread pool.
"""

from __future__ import annotations

import hashlib
import os
import re
import time

from mailserver.store.interfaces import BlobNotFound
from mailserver.threads import run_blocking

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TMP_SUFFIX = ".tmp"


def blob_key(data: bytes) -> str:
    """The key of ``data``: its SHA-256 hex digest."""
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (new, renamed files) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    """``BlobStore`` on a local directory tree, durable by fsync."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        fsync_dir(os.path.dirname(self.root))
        #: fan-out directories whose entries are known to be on disk
        self._durable_dirs: set[str] = set()

    def path(self, key: str) -> str:
        """Where the blob with ``key`` lives; rejects keys that are not a
        SHA-256 hex digest (so a key can never escape the root)."""
        if not _KEY_RE.match(key):
            raise BlobNotFound(key)
        return os.path.join(self.root, key[0:2], key[2:4], key)

    # -- blocking halves -------------------------------------------------

    def _put(self, data: bytes) -> str:
        key = blob_key(data)
        final = self.path(key)
        if os.path.exists(final):
            # Refresh the age so a concurrent garbage collection that saw the
            # blob unreferenced and old does not delete it under this put.
            os.utime(final)
            return key
        d2 = os.path.dirname(final)
        d1 = os.path.dirname(d2)
        if d2 not in self._durable_dirs:
            os.makedirs(d2, exist_ok=True)
        tmp = f"{final}.{os.getpid()}.{time.monotonic_ns()}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, final)
        fsync_dir(d2)
        if d2 not in self._durable_dirs:
            # The fan-out directories may be new (made by this or a
            # concurrent put): their entries must be durable too.  Once per
            # directory and process.
            fsync_dir(d1)
            fsync_dir(self.root)
            self._durable_dirs.add(d2)
        return key

    def _get_range(self, key: str, start: int, end: int | None) -> bytes:
        try:
            with open(self.path(key), "rb") as f:
                if end is None:
                    return f.read()
                start = max(0, start)
                if end <= start:
                    return b""
                f.seek(start)
                return f.read(end - start)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def _delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except (FileNotFoundError, BlobNotFound):
            return

    def _scan(self) -> list[tuple[str, float]]:
        """(key, mtime) of every blob; also removes stale temp files."""
        out: list[tuple[str, float]] = []
        now = time.time()
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = os.path.join(dirpath, name)
                try:
                    mtime = os.stat(full).st_mtime
                except FileNotFoundError:
                    continue
                if _KEY_RE.match(name):
                    out.append((name, mtime))
                elif name.endswith(_TMP_SUFFIX) and now - mtime > 3600:
                    # Left by a crash in the middle of a put.
                    try:
                        os.unlink(full)
                    except FileNotFoundError:
                        pass
        out.sort()
        return out

    def _delete_if_older(self, key: str, cutoff: float) -> bool:
        path = self.path(key)
        try:
            if os.stat(path).st_mtime > cutoff:
                return False
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    # -- BlobStore -------------------------------------------------------

    async def put(self, data: bytes) -> str:
        """Store durably and return the key (idempotent).  Hashing runs in
        the pool too: a megabyte of SHA-256 is milliseconds of reactor time."""
        return await run_blocking(self._put, bytes(data))

    async def get(self, key: str) -> bytes:
        return await run_blocking(self._get_range, key, 0, None)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the blob, clipped; reads only that range."""
        return await run_blocking(self._get_range, key, start, end)

    async def delete(self, key: str) -> None:
        await run_blocking(self._delete, key)

    async def keys(self) -> list[str]:
        return [k for k, _ in await run_blocking(self._scan)]

    # -- for the embedded backend's garbage collection --------------------

    async def scan(self) -> list[tuple[str, float]]:
        """(key, modification time) of every blob, by key."""
        return await run_blocking(self._scan)

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Delete the blob if it was last written before ``cutoff`` (epoch
        seconds); True if it was deleted."""
        return await run_blocking(self._delete_if_older, key, cutoff)
