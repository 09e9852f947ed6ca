"""On-disk cache of built artifacts (trained models, decoded datasets).

An entry is keyed by a ``keys.ArtifactKey`` (everything that determines it), and by nothing
else: ``fetch`` refuses any other key. Under
``pytest -n 2`` one process builds an entry while the others wait on a file lock and then
load it. Writes go to a temporary file that is renamed into place, so a crash never
leaves a half-written entry; each entry carries a digest of its contents, so a corrupt or
truncated file is detected on load and rebuilt. The root may also be a shared store
(``s3://bucket/prefix``, any fsspec URL: ``store.SharedStore``), published payload first and
manifest last; files kept beside the artifacts (ONNX exports, spectra, plots) then stay in a
local folder, and the lock that keeps this machine's workers from building one entry twice
lives in the local temp folder. When the shared store stops answering (``store``: retried for
a bounded time), an entry built meanwhile is kept in this machine's spill folder, served from
there, and published by the next run here; an entry that cannot be read is never rebuilt for
that alone: the run stops in one line. A read-only cache folder (one that cannot
take a lock file) still serves the entries it holds; building a missing one there fails in
one line.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from .errors import ConfigError, StorageError, StoreUnavailable
from .fingerprint import code_fingerprint
from .keys import ArtifactKey
from .store import CorruptEntry, SharedStore, is_shared, local_path

log = logging.getLogger("mnv2bench.cache")

# An entry's layout is this module's: an entry of another layout is rebuilt. What an entry holds
# is its builder's business: each key carries the fingerprint of the code that builds it.
FORMAT = code_fingerprint(__name__)
WAIT_LOG_INTERVAL_S = 30.0
SHARED_FILES = Path(".mnv2cache-files")  # this machine's side files when the entries are in a shared store
FULL_DISK_BYTES = 64 * 2**20  # a failed write with less than this left beside it: the disk was full


@dataclass(frozen=True)
class CacheResult:
    payload: dict[str, Any]
    key: str
    status: str  # "built" or "loaded"
    path: Path | str  # the entry's file, or its manifest's URL in a shared store


@dataclass
class ArtifactCache:
    """``run_id`` names the current run: with ``refresh``, an entry built earlier by another
    run is rebuilt, while one built during this run (by any worker) is reused."""

    root: Path | str  # a folder, or a shared store's URL (s3://bucket/prefix)
    run_id: str = "local"
    refresh: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    files: Path | None = None  # where files kept with the artifacts go (default: the root, or SHARED_FILES)
    storage_options: dict[str, Any] = field(default_factory=dict)  # for the shared store's file system

    def __post_init__(self):
        self.shared = SharedStore(str(self.root), self.storage_options) if is_shared(self.root) else None
        if self.shared is None:
            self.root = local_path(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            self.locks = self.root
        else:
            url_hash = hashlib.sha256(self.shared.url.encode()).hexdigest()[:16]
            self.locks = Path(tempfile.gettempdir()) / "mnv2bench-locks" / url_hash
            self.locks.mkdir(parents=True, exist_ok=True)
        self.files = Path(self.files or (self.root if self.shared is None else SHARED_FILES))
        self.files.mkdir(parents=True, exist_ok=True)
        if self.shared is not None:
            self.spill = self.files / "spill" / url_hash  # entries built while the store was down
            self._publish_spilled()

    def _publish_spilled(self) -> None:
        """Publish the entries an earlier run here built while the store was down."""
        for path in sorted(self.spill.glob("*.pt")) if self.spill.is_dir() else []:
            with FileLock(str(self.locks / path.name) + ".lock"):
                if path.exists():
                    self.shared.write(path.stem, path.read_bytes())
                    path.unlink()
                    log.info("published %s, kept in %s while the store was down", path.stem, self.spill)

    def path_for(self, key: ArtifactKey) -> Path | str:
        return self._where(_checked(key).entry)

    def _where(self, entry_name: str) -> Path | str:
        return self.shared.where(entry_name) if self.shared else self.root / f"{entry_name}.pt"

    def holds(self, key: ArtifactKey) -> bool:
        """Whether an entry of ``key`` is there (not read: a corrupt one is rebuilt when fetched)."""
        entry = _checked(key).entry
        if self.shared is None:
            return (self.root / f"{entry}.pt").exists()
        return (self.spill / f"{entry}.pt").exists() or self.shared.published(entry)

    def fetch(self, key: ArtifactKey, build: Callable[[], dict[str, Any]]) -> CacheResult:
        """Load the entry of ``key``, or build, save and return it. ``build`` returns a dict
        of tensors and JSON-like values."""
        entry_name, name = _checked(key).entry, key.label
        path = self._where(entry_name)
        try:
            lock = self._locked(self.locks / f"{entry_name}.pt", name)
        except OSError:  # no lock file can be made here: a read-only cache
            return self._read_only(name, path, key.digest)
        with lock:
            entry = self._load(path, key.digest, entry_name)
            if entry is not None and not (self.refresh and entry["run_id"] != self.run_id):
                self.events.append((name, "loaded"))
                return CacheResult(entry["payload"], key.digest, "loaded", path)
            started = time.perf_counter()
            log.info("building %s", name)
            payload = build()
            self._save(path, entry_name, {"format": FORMAT, "key": key.digest, "spec": key.describe(),
                                          "run_id": self.run_id, "payload": payload,
                                          "digest": payload_digest(payload)})
            log.info("built %s in %.1fs -> %s", name, time.perf_counter() - started, entry_name)
            self.events.append((name, "built"))
            return CacheResult(payload, key.digest, "built", path)

    def _read_only(self, name: str, path: Path, key: str) -> CacheResult:
        """The entry from a cache folder nothing can be written to (no lock: no one builds there)."""
        entry = None if self.refresh else self._load(path, key, path.stem)
        if entry is None:
            raise ConfigError(f"cache folder {self.root} is read-only and holds no valid entry for {name} "
                              f"({path.name}): make it writable, or point --cache-dir at a folder you can write")
        self.events.append((name, "loaded"))
        return CacheResult(entry["payload"], key, "loaded", path)

    def _locked(self, path: Path, name: str):
        """Acquire the entry's lock (a context manager that releases it), logging while waiting."""
        lock = FileLock(str(path) + ".lock")
        waited = 0.0
        while True:
            try:
                return lock.acquire(timeout=WAIT_LOG_INTERVAL_S if waited else 0)
            except Timeout:
                if not waited:
                    log.info("waiting for another process to build %s", name)
                waited += WAIT_LOG_INTERVAL_S
                if waited > WAIT_LOG_INTERVAL_S:
                    log.info("still waiting for %s (%.0fs)", name, waited)

    def _load(self, path: Path | str, key: str, entry_name: str) -> dict[str, Any] | None:
        try:
            if self.shared is not None and (self.spill / f"{entry_name}.pt").exists():
                source: Any = self.spill / f"{entry_name}.pt"  # built here while the store was down
            elif self.shared is not None:
                data = self.shared.read(entry_name)
                if data is None:
                    return None
                source = io.BytesIO(data)
            elif not path.exists():
                return None
            else:
                source = path
            entry = torch.load(source, map_location="cpu", weights_only=True)
            problem = _entry_problem(entry, key)
        except StoreUnavailable:
            raise  # an outage, not a corrupt entry: nothing is rebuilt for it
        except CorruptEntry as exc:
            problem = str(exc)
        except Exception as exc:  # any unreadable file is a corrupt entry
            problem = f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"
        if problem:
            log.warning("cache entry %s is corrupt (%s); rebuilding it", entry_name, problem)
            self.events.append((entry_name.rsplit("-", 1)[0], "corrupt"))  # the run's summary says so too
            return None
        return entry

    def _save(self, path: Path | str, entry_name: str, entry: dict[str, Any], local: bool = False) -> None:
        if self.shared is not None and not local:
            buffer = io.BytesIO()
            torch.save(entry, buffer)
            try:
                self.shared.write(entry_name, buffer.getvalue())
            except StoreUnavailable:
                self.spill.mkdir(parents=True, exist_ok=True)
                self._save(self.spill / f"{entry_name}.pt", entry_name, entry, local=True)
                log.warning("artifact store %s is down: %s is kept in %s until a run here publishes it",
                            self.shared.url, entry_name, self.spill)
            return
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                torch.save(entry, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, path)
        except BaseException as exc:
            full = isinstance(exc, Exception) and _full_disk_message(path.parent, entry_name, temp_name)
            Path(temp_name).unlink(missing_ok=True)
            if full:  # torch.save says "unexpected pos ..." when the disk fills under it
                raise StorageError(full) from exc
            raise


def _full_disk_message(folder: Path, entry_name: str, temp_name: str) -> str | None:
    """Why a write into ``folder`` failed when its disk is full (None when it is not)."""
    free = shutil.disk_usage(folder).free
    if free >= FULL_DISK_BYTES:
        return None
    written = Path(temp_name).stat().st_size if Path(temp_name).exists() else 0
    return (f"cache folder {folder}: its disk is full ({free / 1e6:.0f} MB free) after {written / 1e6:.0f} MB of "
            f"{entry_name}: free space there, or point --cache-dir at a disk with room")


def _checked(key: ArtifactKey) -> ArtifactKey:
    if not isinstance(key, ArtifactKey):
        raise TypeError(f"the artifact cache takes an ArtifactKey (mnv2core.keys), not a {type(key).__name__}")
    return key


def _entry_problem(entry: Any, key: str) -> str | None:
    if not isinstance(entry, dict) or not {"key", "payload", "digest", "run_id"} <= set(entry):
        return "missing fields"
    if entry.get("format") != FORMAT or entry["key"] != key:
        return "written for another key or format"
    if payload_digest(entry["payload"]) != entry["digest"]:
        return "contents do not match their digest"
    return None


def payload_digest(value: Any) -> str:
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, dict):
        digest.update(b"{")
        for k in sorted(value, key=str):
            digest.update(repr(k).encode())
            _feed(digest, value[k])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(value).encode())
