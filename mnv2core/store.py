"""Where cache entries live: a local folder, or any fsspec file system (``s3://bucket/prefix``
through s3fs, ``gs://``, ``file://``...) shared by several machines.

A shared store has no rename that is atomic everywhere and no lock that holds across
machines, so an entry is published in two steps: its payload first, under a name of its own
(``NAME.<random>.pt``), then its manifest (``NAME.json``: which payload, its sha256 and size),
written in one request. The manifest is the entry: a reader ignores a payload without one,
and rebuilds an entry whose payload does not match the manifest's checksum. A second writer
of the same entry writes its own payload and then its own manifest, so a reader always sees
one complete pair, never a mix.

A store that does not answer (a connection refused, a timeout, a 5xx) is retried with
exponential backoff for ``MNV2BENCH_STORE_RETRY_S`` seconds (default 60), then
``StoreUnavailable`` stops the run in one line naming the store; from then on the store is
taken as down for the rest of the process, without retrying each call again. A missing file
is an answer, not an outage.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import StoreUnavailable

T = TypeVar("T")
RETRY_SECONDS = 60.0  # how long a store that does not answer is retried (MNV2BENCH_STORE_RETRY_S)
FIRST_BACKOFF_S = 0.5

LOCAL_SCHEMES = ("", "file")


def is_shared(location: str | Path) -> bool:
    """Whether ``location`` names an fsspec file system rather than a local folder."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0] not in LOCAL_SCHEMES


def local_path(location: str | Path) -> Path:
    """A local folder named by a path or a file:// URL."""
    text = str(location)
    return Path(text.split("://", 1)[1] if text.startswith("file://") else text)


class CorruptEntry(Exception):
    """A manifest whose payload is missing or does not match its checksum."""


class SharedStore:
    """Entries in an fsspec file system, published payload first, manifest last."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec  # only a shared store needs it (and s3fs for s3://)

        self.url = url.rstrip("/")
        self.down: str | None = None  # why the store stopped answering, once it has
        self.retry_seconds = float(os.environ.get("MNV2BENCH_STORE_RETRY_S", RETRY_SECONDS))
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self._call(lambda: self.fs.makedirs(self.root, exist_ok=True), "open")

    def _call(self, operation: Callable[[], T], what: str) -> T:
        """``operation``'s result, retried with backoff while the store does not answer;
        FileNotFoundError and PermissionError are answers, raised at once."""
        if self.down is not None:
            raise StoreUnavailable(self.down)
        deadline, wait = time.monotonic() + self.retry_seconds, FIRST_BACKOFF_S
        while True:
            try:
                return operation()
            except (FileNotFoundError, PermissionError):
                raise
            except Exception as exc:  # s3fs, aiohttp and botocore raise many kinds for an outage
                if time.monotonic() + wait > deadline:
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    self.down = (f"artifact store {self.url} did not answer ({what}: {type(exc).__name__}: {first}) "
                                 f"for {self.retry_seconds:.0f} s: check that it is up and reachable, or run with a "
                                 f"local --cache-dir (MNV2BENCH_STORE_RETRY_S sets the wait)")
                    raise StoreUnavailable(self.down) from exc
                time.sleep(wait)
                wait = min(2 * wait, 10.0)

    def read(self, name: str) -> bytes | None:
        """The entry's payload; None when there is no manifest (nothing published yet)."""
        try:
            manifest = json.loads(self._call(lambda: self.fs.cat_file(self._path(f"{name}.json")), "read"))
        except FileNotFoundError:
            return None
        try:
            data = self._call(lambda: self.fs.cat_file(self._path(manifest["payload"])), "read")
        except FileNotFoundError:
            raise CorruptEntry(f"its payload {manifest['payload']} is missing") from None
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise CorruptEntry(f"payload {manifest['payload']} does not match its manifest's checksum")
        return data

    def write(self, name: str, data: bytes) -> None:
        payload = f"{name}.{uuid.uuid4().hex[:12]}.pt"
        self._call(lambda: self.fs.pipe_file(self._path(payload), data), "write")
        manifest = {"payload": payload, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        self._call(lambda: self.fs.pipe_file(self._path(f"{name}.json"), json.dumps(manifest).encode()), "write")

    def published(self, name: str) -> bool:
        return self._call(lambda: self.fs.exists(self._path(f"{name}.json")), "list")

    def where(self, name: str) -> str:
        return f"{self.url}/{name}.json"

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"
