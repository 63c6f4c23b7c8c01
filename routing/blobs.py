"""Where raw originals and attachments live: a content-addressed blob store.

Keys are the SHA-256 of the bytes (``sha256/ab/cd/abcd…``), so storing the same mail
twice — a redelivery, a re-import — writes nothing new, and a key says nothing about a
customer. ``FileBlobStore`` keeps files under a directory (the default, one machine);
several machines share one by mounting the same directory, or by another implementation
of ``BlobStore`` (object storage) with the same four methods.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol


class BlobNotFound(KeyError):
    """No blob is stored under that key."""


class BlobStore(Protocol):
    """Stores immutable bytes under a key derived from their content."""

    async def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its key."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; raises ``BlobNotFound``."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (erasure requests); a missing key is not an error."""
        ...


def blob_key(data: bytes) -> str:
    """The content key of ``data``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"sha256/{digest[:2]}/{digest[2:4]}/{digest}"


class FileBlobStore:
    """Blobs as files under ``root``; writes are atomic (temporary file, then rename)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "sha256" or any(not p.isalnum() for p in parts[1:]):
            raise BlobNotFound(key)
        return self.root.joinpath(*parts)

    def _put(self, data: bytes) -> str:
        key = blob_key(data)
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    async def put(self, data: bytes) -> str:
        """Store ``data`` durably (fsync before rename) and return its key."""
        return await asyncio.to_thread(self._put, data)

    async def get(self, key: str) -> bytes:
        """The stored bytes; raises ``BlobNotFound``."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    async def exists(self, key: str) -> bool:
        """Whether the key is stored."""
        try:
            return self._path(key).exists()
        except BlobNotFound:
            return False

    async def delete(self, key: str) -> None:
        """Remove the blob if present."""
        self._path(key).unlink(missing_ok=True)
