"""The benchmark grid: dataset x model x technique, from a profile and the technique registry,
and the order its cases should run in (from the dependency graph)."""
from __future__ import annotations

from .context import Case
from .errors import ConfigError
from .profiles import Profile, derived_technique
from .registry import COMPRESSION, DEPLOYMENT, MEASUREMENT, Catalogue

__all__ = ["Case", "build_grid", "plan", "schedule_rank", "upstream_of"]


def plan(profile: Profile, catalogue: Catalogue) -> dict[str, Case]:
    """Every technique of the profile as a dataset-free case template: technique name ->
    Case(model, method, base). Compressions apply to each compression base, deployments
    to each deployment base (trained or compressed)."""
    cases = {tech: Case("", catalogue.get(tech).model, tech) for tech in profile.techniques}
    for tech, base, compression in profile.compressed_cases():
        cases[tech] = Case("", cases[base].model, tech, compression.name, base)
    for tech, base, name, _ in profile.deployment_cases():
        cases[tech] = Case("", cases[base].model, tech, name, base)
    return cases


def build_grid(profile: Profile, catalogue: Catalogue, datasets: list[str] | None = None,
               techniques: list[str] | None = None) -> list[Case]:
    """Every (dataset, technique) of the profile, optionally narrowed to some datasets or
    techniques; unknown names raise ConfigError listing the valid ones."""
    templates = plan(profile, catalogue)
    chosen_datasets = _choose(datasets, list(profile.datasets), "dataset", profile.name)
    chosen_techniques = _choose(techniques, list(templates), "technique", profile.name)
    grid = []
    for ds in chosen_datasets:
        config = profile.datasets[ds]
        for tech in chosen_techniques:
            case = templates[tech]
            compressed = _compressed(case, templates, catalogue)
            if config.runs(_study(case, templates, catalogue)) and (config.compress or not compressed):
                grid.append(Case(ds, case.model, tech, case.method, case.base))
    return grid


def upstream_of(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> list[str]:
    """The techniques (grid names) ``case`` waits for on its dataset: its base and what its
    method needs (named relative to the base: a lottery ticket's "prune" is its base's)."""
    needs = catalogue.get(case.method).needs
    if case.base is None:
        return list(needs)
    return [case.base, *(derived_technique(case.base, need) for need in needs)]


AFTER_LONG_POLES = 100  # rank offset of the cases that wait for a long pole


def schedule_rank(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> int:
    """When to start a case: long trainings others wait for first (-1); then every case by its
    depth in the dependency graph, those that do not wait for a long training before those
    that do (a worker that picks up a distilled student early sits idle on the teacher's
    lock); measurements of speed last."""
    technique = catalogue.get(case.method)
    if technique.role == MEASUREMENT:
        return 1000
    if technique.starts_early:
        return -1
    waits = _waits_for_long_pole(case, templates, catalogue)
    return _depth(case, templates, catalogue) + (AFTER_LONG_POLES if waits else 0)


def _upstream_cases(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> list[Case]:
    return [templates[name] for name in upstream_of(case, templates, catalogue) if name in templates]


def _depth(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> int:
    upstream = _upstream_cases(case, templates, catalogue)
    return 1 + max((_depth(up, templates, catalogue) for up in upstream), default=-1)


def _waits_for_long_pole(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> bool:
    return any(catalogue.get(up.method).starts_early or _waits_for_long_pole(up, templates, catalogue)
               for up in _upstream_cases(case, templates, catalogue))


def _study(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> str:
    return _study(templates[case.base], templates, catalogue) if case.base else catalogue.get(case.method).study


def _compressed(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> bool:
    """Whether ``case`` is a compression or measures a compressed model."""
    if catalogue.get(case.method).role == COMPRESSION:
        return True
    return catalogue.get(case.method).role == DEPLOYMENT and _compressed(templates[case.base], templates, catalogue)


def _choose(wanted: list[str] | None, available: list[str], kind: str, profile: str) -> list[str]:
    if not wanted:
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown} for profile {profile!r}; choose from {available}")
    return [name for name in available if name in wanted]
