"""Where cache entries live: a local folder, or any fsspec file system (``s3://bucket/prefix``
through s3fs, ``gs://``, ``file://``...) shared by several machines.

A shared store has no rename that is atomic everywhere and no lock that holds across
machines, so an entry is published in two steps: its payload first, under a name of its own
(``NAME.<random>.pt``), then its manifest (``NAME.json``: which payload, its sha256 and size),
written in one request. The manifest is the entry: a reader ignores a payload without one,
and rebuilds an entry whose payload does not match the manifest's checksum. A second writer
of the same entry writes its own payload and then its own manifest, so a reader always sees
one complete pair, never a mix.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

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
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.fs.makedirs(self.root, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        """The entry's payload; None when there is no manifest (nothing published yet)."""
        try:
            manifest = json.loads(self.fs.cat_file(self._path(f"{name}.json")))
        except FileNotFoundError:
            return None
        try:
            data = self.fs.cat_file(self._path(manifest["payload"]))
        except FileNotFoundError:
            raise CorruptEntry(f"its payload {manifest['payload']} is missing") from None
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise CorruptEntry(f"payload {manifest['payload']} does not match its manifest's checksum")
        return data

    def write(self, name: str, data: bytes) -> None:
        payload = f"{name}.{uuid.uuid4().hex[:12]}.pt"
        self.fs.pipe_file(self._path(payload), data)
        manifest = {"payload": payload, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        self.fs.pipe_file(self._path(f"{name}.json"), json.dumps(manifest).encode())

    def published(self, name: str) -> bool:
        return self.fs.exists(self._path(f"{name}.json"))

    def where(self, name: str) -> str:
        return f"{self.url}/{name}.json"

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"
