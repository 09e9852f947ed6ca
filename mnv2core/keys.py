"""The one key of every cache entry: what it is (``kind``), the recipe and parameters that
determine it, the keys of the artifacts it is built from, the seed, and the fingerprint of
the code that builds it. Every entry of the artifact cache (models, pretext weights, frozen
features, decoded datasets, cached measurements, exported files) is keyed by an
``ArtifactKey``; the store accepts nothing else. A key is pure data, computed without
building anything, so a plan (the cluster's, ``--plan``) holds every key before a build."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import code_fingerprint

FORMAT = code_fingerprint(__name__)  # the key format: editing this module changes every key
DIGEST_CHARS = 24


@dataclass(frozen=True, eq=False)
class ArtifactKey:
    """An entry's identity. ``label`` names it for people (``cifar10-mobilenet_v2-full_ft``);
    ``upstream`` maps a role ("full_ft", "weights", "model") to the key of an artifact it is
    built from; ``target`` says how a plan builds it ("artifact", dataset, technique, model) or
    ("pretext", model, size), empty where nothing plans it. Neither ``label`` nor ``target``
    is part of the identity: two keys are equal when their digests are."""

    label: str
    kind: str
    recipe: Mapping[str, Any]
    code: str
    seed: int | None = None
    upstream: Mapping[str, ArtifactKey] = field(default_factory=dict)
    target: tuple = ()

    def __post_init__(self):
        for name, up in self.upstream.items():
            if not isinstance(up, ArtifactKey):
                raise TypeError(f"{self.label}: upstream {name!r} is a {type(up).__name__}, not an ArtifactKey")
        object.__setattr__(self, "digest", hashlib.sha256(self.canonical().encode()).hexdigest()[:DIGEST_CHARS])

    digest: str = field(init=False, repr=False)

    def canonical(self) -> str:
        """The key's identity as canonical JSON (sorted keys; an upstream key by its digest)."""
        return json.dumps({"format": FORMAT, "kind": self.kind, "recipe": self.recipe, "code": self.code,
                           "seed": self.seed, "upstream": {name: up.digest for name, up in self.upstream.items()}},
                          sort_keys=True, default=_refuse)

    @property
    def entry(self) -> str:
        """The entry's name in a store: its label (made file-safe) and its digest."""
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.label)}-{self.digest}"

    def describe(self) -> dict[str, Any]:
        """The key as plain data, kept in its entry so that a reader can see what made it."""
        return {"label": self.label, "kind": self.kind, "recipe": json.loads(json.dumps(self.recipe, default=_refuse)),
                "code": self.code, "seed": self.seed, "upstream": {n: up.entry for n, up in self.upstream.items()}}

    def walk(self) -> Iterator[ArtifactKey]:
        """This key and every key upstream of it, each once, upstream first."""
        seen: set[str] = set()

        def visit(key: ArtifactKey) -> Iterator[ArtifactKey]:
            if key.digest in seen:
                return
            seen.add(key.digest)
            for up in key.upstream.values():
                yield from visit(up)
            yield key

        yield from visit(self)

    def __repr__(self) -> str:
        return f"ArtifactKey({self.entry})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactKey) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


def _refuse(value: Any) -> Any:
    """JSON for the few non-JSON values a recipe may hold; anything else is a mistake."""
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"a cache key's recipe holds a {type(value).__name__} ({value!r:.80}): give plain data "
                    f"(an upstream artifact goes in upstream=)")
