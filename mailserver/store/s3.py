"""Content-addressed blob store on S3 object storage via the ``minio`` SDK.

Works with any S3 service (MinIO, SeaweedFS, Ceph RGW, AWS S3).  A blob's
key is the SHA-256 hex digest of its bytes; the object name is
``<prefix><key>``.  ``put`` returns only after the service acknowledged the
PUT (for a replicated store: after the write quorum), and bodies larger than
``part_size`` go up as a multipart upload, so a 35 MB message never needs one
giant request.  ``get_range`` is a ranged GET, so a partial FETCH reads only
the octets it needs.  The SDK blocks, so every call runs in the shared
bounded thread pool (``mailserver.threads``); its HTTP connection pool is
sized to match, so threads never wait for a connection.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from mailserver.store.interfaces import BlobNotFound
from mailserver.threads import DEFAULT_MAX_THREADS, run_blocking

T = TypeVar("T")

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}

#: Minimum multipart part size S3 allows is 5 MiB.
DEFAULT_PART_SIZE = 8 * 1024 * 1024


def blob_key(data: bytes) -> str:
    """The key of ``data``: its SHA-256 hex digest."""
    return hashlib.sha256(data).hexdigest()


class S3BlobStore:
    """``BlobStore`` on one S3 bucket."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        timeout: float = 30.0,
        max_connections: int = DEFAULT_MAX_THREADS,
        retries: int = 3,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("part_size must be at least 5 MiB (an S3 limit)")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            maxsize=max_connections,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> S3BlobStore:
        """Build from a ``[storage.s3]`` table: endpoint, access_key,
        secret_key, bucket and optional secure, region, prefix, part_size,
        timeout."""
        return cls(
            cfg["endpoint"],
            cfg["access_key"],
            cfg["secret_key"],
            cfg["bucket"],
            secure=bool(cfg.get("secure", False)),
            region=cfg.get("region", "us-east-1"),
            prefix=cfg.get("prefix", ""),
            part_size=int(cfg.get("part_size", DEFAULT_PART_SIZE)),
            timeout=float(cfg.get("timeout", 30.0)),
        )

    def _name(self, key: str) -> str:
        if not _KEY_RE.match(key):
            raise BlobNotFound(key)
        return self.prefix + key

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await run_blocking(fn, *args, **kw)

    # -- blocking halves -------------------------------------------------

    def _ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as e:
                if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _put(self, data: bytes, key: str) -> None:
        # Always PUT (even if present): it refreshes Last-Modified, so a
        # garbage collection that saw the blob old and unreferenced does not
        # delete it from under a delivery in flight (same rule as files.py).
        self.client.put_object(
            self.bucket,
            self._name(key),
            io.BytesIO(data),
            length=len(data),
            part_size=self.part_size,
            content_type="message/rfc822",
        )

    def _read(self, name: str, offset: int = 0, length: int = 0) -> bytes:
        resp = self.client.get_object(self.bucket, name, offset=offset, length=length)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def _get_range(self, key: str, start: int, end: int | None) -> bytes:
        name = self._name(key)
        try:
            if end is None:
                return self._read(name)
            start = max(0, start)
            if end <= start:
                self.client.stat_object(self.bucket, name)
                return b""
            return self._read(name, start, end - start)
        except S3Error as e:
            if e.code in _MISSING:
                raise BlobNotFound(key) from None
            if e.code == "InvalidRange":
                # start lies at or beyond the end: clipped to nothing.
                self._get_range(key, 0, 0)
                return b""
            raise

    def _delete(self, key: str) -> None:
        try:
            name = self._name(key)
        except BlobNotFound:
            return
        try:
            self.client.remove_object(self.bucket, name)
        except S3Error as e:
            if e.code not in _MISSING:
                raise

    def _scan(self) -> list[tuple[str, float]]:
        out = []
        for obj in self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True):
            name = obj.object_name or ""
            key = name[len(self.prefix) :]
            if _KEY_RE.match(key):
                mtime = obj.last_modified.timestamp() if obj.last_modified else 0.0
                out.append((key, mtime))
        out.sort()
        return out

    def _delete_if_older(self, key: str, cutoff: float) -> bool:
        name = self._name(key)
        try:
            st = self.client.stat_object(self.bucket, name)
        except S3Error as e:
            if e.code in _MISSING:
                return False
            raise
        if st.last_modified is not None and st.last_modified.timestamp() > cutoff:
            return False
        self._delete(key)
        return True

    # -- BlobStore -------------------------------------------------------

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        await self._run(self._ensure_bucket)

    async def put(self, data: bytes) -> str:
        """Store and return the key once the service acknowledged it."""
        data = bytes(data)
        key = blob_key(data)
        await self._run(self._put, data, key)
        return key

    async def get(self, key: str) -> bytes:
        return await self._run(self._get_range, key, 0, None)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the blob, clipped, with one ranged GET."""
        return await self._run(self._get_range, key, start, end)

    async def delete(self, key: str) -> None:
        await self._run(self._delete, key)

    async def keys(self) -> list[str]:
        return [k for k, _ in await self._run(self._scan)]

    # -- for garbage collection -------------------------------------------

    async def scan(self) -> list[tuple[str, float]]:
        """(key, last-modified epoch seconds) of every blob, by key."""
        return await self._run(self._scan)

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Delete the blob if it was last written before ``cutoff``; True if
        it was deleted.  (S3 has no conditional DELETE; the window between
        the HEAD and the DELETE is closed by the metadata side: collection
        only considers content unreferenced for longer than the grace.)"""
        return await self._run(self._delete_if_older, key, cutoff)
