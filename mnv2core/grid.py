"""The benchmark grid: dataset x model x technique, from a profile and the technique registry,
and the order its cases should run in (from the dependency graph)."""
from __future__ import annotations

from .context import Case
from .errors import ConfigError
from .profiles import Profile, derived_technique
from .registry import Catalogue

__all__ = ["Case", "build_grid", "find_case", "plan", "schedule_rank", "upstream_of"]


def plan(profile: Profile, catalogue: Catalogue) -> dict[str, Case]:
    """Every case of the profile by id (``DATASET-MODEL-TECHNIQUE``), in grid order:
    ``Profile.cases`` of each dataset as ``Case``s."""
    return {case.id: case for ds in profile.datasets
            for case in (Case(ds, model, tech, method, base) for model, tech, method, base in profile.cases(ds, catalogue))}


def build_grid(profile: Profile, catalogue: Catalogue, datasets: list[str] | None = None,
               techniques: list[str] | None = None) -> list[Case]:
    """Every case of the profile, optionally narrowed to some datasets or techniques;
    unknown names raise ConfigError listing the valid ones."""
    cases = list(plan(profile, catalogue).values())
    chosen_datasets = _choose(datasets, list(profile.datasets), "dataset", profile.name)
    chosen_techniques = _choose(techniques, list(dict.fromkeys(c.technique for c in cases)), "technique", profile.name)
    return [c for c in cases if c.dataset in chosen_datasets and c.technique in chosen_techniques]


def find_case(templates: dict[str, Case], dataset: str, technique: str, model: str | None = None) -> Case | None:
    """The case of ``technique`` on ``dataset`` (of ``model`` when given, else the only one)."""
    if model is not None:
        return templates.get(Case(dataset, model, technique).id)
    found = [c for c in templates.values() if c.dataset == dataset and c.technique == technique]
    if len(found) > 1:
        raise ConfigError(f"{technique} runs on {[c.model for c in found]} of {dataset}: say which model")
    return found[0] if found else None


def upstream_of(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> list[str]:
    """The ids of the cases ``case`` waits for: its base and what its method needs (named
    relative to the base: a lottery ticket's "prune" is its base's; else on the same model,
    or the dataset's only case of that technique, as the distilled student's teacher)."""
    needs = catalogue.get(case.method).needs
    if case.base is not None:
        names = [case.base, *(derived_technique(case.base, need) for need in needs)]
        return [Case(case.dataset, case.model, name).id for name in names]
    found = [find_case(templates, case.dataset, need, case.model) or find_case(templates, case.dataset, need)
             for need in needs]
    return [up.id for up in found if up is not None]


# schedule ranks (lower starts first)
LONG_POLE_RANK = -1  # long trainings others wait for
LEVEL = 2  # per level of the dependency graph
AFTER_LONG_POLE = LEVEL  # a case that waits for a long pole starts one level later
DEPLOYMENT_OFFSET = LEVEL + 1  # a deployment measurement fills in behind the next level's trainings
MEASUREMENT_RANK = 1000  # speed measurements last


def schedule_rank(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> tuple[int, int]:
    """When to start a case, as (rank, latest rank among what it waits for); lower first.

    Rank: long trainings others wait for first (-1); then every case by its depth in the
    dependency graph, a case that waits for a long training one level later than its depth
    (a worker that picks up a distilled student too early sits idle on the teacher's lock;
    much later, and the student's own chain of trainings is the last thing running, on one
    core); measurements of speed last. Nothing waits for a deployment measurement, so it
    fills in behind the trainings one level deeper (the partial model's int8 and attacks
    after full fine-tuning has started): the chains of trainings are the critical path.
    Within a rank, the case whose inputs were started earliest goes first, whatever order
    pytest collected the test files in (the distilled student, whose teacher started first,
    before the compressions of a fine-tuning that has just begun)."""
    upstream = [_rank(up, templates, catalogue) for up in _upstream_cases(case, templates, catalogue)]
    return _rank(case, templates, catalogue), max(upstream, default=LONG_POLE_RANK - 1)


def _rank(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> int:
    technique = catalogue.get(case.method)
    if technique.role.measures_its_own:
        return MEASUREMENT_RANK
    if technique.starts_early:
        return LONG_POLE_RANK
    rank = LEVEL * _depth(case, templates, catalogue)
    if technique.role.measures_a_base:
        rank += DEPLOYMENT_OFFSET
    return rank + (AFTER_LONG_POLE if _waits_for_long_pole(case, templates, catalogue) else 0)


def _upstream_cases(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> list[Case]:
    return [templates[name] for name in upstream_of(case, templates, catalogue) if name in templates]


def _depth(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> int:
    upstream = _upstream_cases(case, templates, catalogue)
    return 1 + max((_depth(up, templates, catalogue) for up in upstream), default=-1)


def _waits_for_long_pole(case: Case, templates: dict[str, Case], catalogue: Catalogue) -> bool:
    return any(catalogue.get(up.method).starts_early or _waits_for_long_pole(up, templates, catalogue)
               for up in _upstream_cases(case, templates, catalogue))


def _choose(wanted: list[str] | None, available: list[str], kind: str, profile: str) -> list[str]:
    if not wanted:
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown} for profile {profile!r}; choose from {available}")
    return [name for name in available if name in wanted]
