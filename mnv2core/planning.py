"""What a run will build, before it builds anything: every artifact a set of cases needs, as
nodes in dependency order, from the study's pure key functions. The cluster submits these
nodes as tasks; ``--plan`` lists them."""
from __future__ import annotations

from dataclasses import dataclass

from .context import Case
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

    def needs(self, case: Case) -> tuple[str, ...]:
        """The nodes ``case``'s task waits for: its own model, or the base model it measures
        (a measurement makes its own, uncached, in its task)."""
        key = self.study.model_key(case)
        if key is None:
            return ()
        for each in key.walk():
            self.nodes.setdefault(each.entry, Node(each.entry, each.target,
                                                   tuple(up.entry for up in each.upstream.values())))
        return (key.entry,)
