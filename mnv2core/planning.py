"""What a run will build, before it builds anything: every artifact a set of cases needs, as
nodes in dependency order, from the study's pure key functions. The cluster submits these
nodes as tasks; ``--plan`` lists them."""
from __future__ import annotations

from dataclasses import dataclass

from .context import Case
from .keys import ArtifactKey
from .study import Study


@dataclass(frozen=True)
class Node:
    """One artifact build: ``key`` is its cache entry's name (label and digest), which is also
    its Dask key; ``target`` how a worker builds it (``ArtifactKey.target``: ("artifact",
    dataset, technique, model) or ("pretext", model, size)); ``upstream``: the nodes its
    build loads."""

    key: str
    target: tuple
    upstream: tuple[str, ...]


class Plan:
    """Every artifact a set of cases needs, as nodes in dependency order, from the study's
    pure key functions: nothing is built or loaded (the data is: its fingerprint is in every
    key)."""

    def __init__(self, study: Study):
        self.study = study
        self.nodes: dict[str, Node] = {}  # in dependency order: upstream first
        self._keys: dict[str, ArtifactKey] = {}

    def needs(self, case: Case) -> tuple[str, ...]:
        """The nodes ``case``'s task waits for: its own model, or the base model it measures
        (a measurement makes its own, uncached, in its task)."""
        key = self.study.model_key(case)
        if key is None:
            return ()
        for each in key.walk():
            self._keys[each.entry] = each
            self.nodes.setdefault(each.entry, Node(each.entry, each.target,
                                                   tuple(up.entry for up in each.upstream.values())))
        return (key.entry,)

    def listing(self) -> list[str]:
        """One line per node, upstream first: whether the cache holds it or it is to be built,
        and what it waits for."""
        lines = []
        for node in self.nodes.values():
            status = "cached" if self.study.cache.holds(self._keys[node.key]) else "build"
            after = f"  (after {', '.join(up.rsplit('-', 1)[0] for up in node.upstream)})" if node.upstream else ""
            lines.append(f"{status:>6}  {node.key.rsplit('-', 1)[0]}{after}")
        built = sum(line.lstrip().startswith("build") for line in lines)
        return [*lines, f"{len(lines)} artifacts: {len(lines) - built} cached, {built} to build"]
