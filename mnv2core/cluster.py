"""The grid on a Dask distributed cluster (``--cluster ADDRESS``).

The client plans first: a ``Plan`` walks every selected case's artifact key (the study's
pure key functions build nothing), so each artifact (a trained or compressed model, the
pretext weights) becomes a node whose Dask key is its cache entry and whose upstream are
the entries its key names. Every node is one Dask task, submitted with its upstream nodes' futures as arguments:
the dependency graph is Dask's, and two clients asking for one entry share one build. A
worker builds a node through an ordinary ``Study`` on the shared store (``--cache-dir``: a
folder every worker sees, or s3://...), so the model is published there and nothing but
names crosses the network. Each case is a task too, after its artifact: the worker
evaluates or measures and returns the case's record (timed cases on a worker offering the
``BENCH`` resource, one per host); the client checks and records it as a local run does.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import platform
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .context import Case
from .datasets import parse_source_override
from .errors import ClusterLost, ConfigError, Mnv2BenchError
from .grid import schedule_rank
from .kernels import problem as kernels_problem
from .planning import Node, Plan
from .profiles import Profile
from .progress import log_progress_to
from .registry import Catalogue
from .store import is_shared
from .study import Settings, Study
from .techniques import catalogue

log = logging.getLogger("mnv2bench.cluster")

BENCH = "BENCH"  # the resource timed cases ask for: give it to one worker per host
GPU = "GPU"  # asked for by every task when the device is CUDA
CONNECT_TIMEOUT = "20s"
RESOURCE_WAIT_S = 60.0  # how long a run waits for a worker offering a resource its tasks ask for
SCHEDULER_FILE_WAIT_S = 60.0  # how long a run waits for a scheduler file to appear
BUILT_BY_ANOTHER_RUN = "built by another run"  # a cache event: a shared task another client submitted first


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to rebuild the client's study: the profile, the run's settings
    (paths absolute), torch threads (None: the worker's own thread count)."""

    token: str
    profile: Profile
    settings: Settings
    threads: int | None


def timed(case: Case, techniques: Catalogue) -> bool:
    """Whether a case measures in this run what the cache cannot keep: timings (latency,
    speed; a reusable measurement depends on nothing but the model, the data and its
    parameters)."""
    technique = techniques.get(case.method)
    return technique.measure is not None and not technique.reusable


def absolute_settings(settings: Settings) -> Settings:
    """``settings`` with every local path absolute: workers may start in another folder."""
    def path_of(text: str) -> str:
        return str(Path(text).resolve()) if Path(text).exists() else text

    def source(text: str) -> str:
        name, kind, path = parse_source_override(text)
        return f"{name}={kind}:{path_of(path)}" if path else text

    cache = settings.cache_dir if is_shared(settings.cache_dir) else Path(settings.cache_dir).resolve()
    return dataclasses.replace(
        settings, data_root=Path(settings.data_root).resolve(), cache_dir=cache,
        results_dir=Path(settings.results_dir).resolve(),
        data_sources=tuple(source(s) for s in settings.data_sources),
        weights={model: path_of(value) for model, value in settings.weights.items()})


def connect(address: str, file_wait_s: float = SCHEDULER_FILE_WAIT_S):
    """A Dask client of the scheduler at ``address`` (tcp://host:port, or a scheduler file,
    waited for up to ``file_wait_s``: a scheduler starting beside the run writes it late)."""
    from distributed import Client

    is_file = address.endswith(".json") or Path(address).is_file()
    if is_file:
        _wait_for_file(Path(address), file_wait_s)
    else:
        _check_address(address)
    try:
        if is_file:
            return Client(scheduler_file=address, timeout=CONNECT_TIMEOUT)
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster {address}: no Dask scheduler answers there ({type(exc).__name__}); start "
                          f"one with `dask scheduler` and workers with `dask worker ADDRESS` (see README), or "
                          f"drop --cluster / MNV2BENCH_CLUSTER to run here") from None


class ClusterRun:
    """The pytest session's side of a cluster run: plans and submits every selected case
    up front, then hands each case its record when its task is done."""

    def __init__(self, client, profile: Profile, settings: Settings, threads: int | None,
                 techniques: Catalogue | None = None):
        self.client = client
        self.address = client.scheduler.address
        self.catalogue = techniques or catalogue()
        settings = absolute_settings(settings)
        if not is_shared(settings.cache_dir):
            Path(settings.cache_dir).mkdir(parents=True, exist_ok=True)
        self.plan = Plan(Study(profile, settings, self.catalogue))
        self.run = RunSpec(f"{settings.run_id}-{uuid.uuid4().hex[:8]}", profile, settings, threads)
        self.cuda = str(settings.device or profile.device).startswith("cuda")
        self.futures: dict[str, Any] = {}  # node key or case id -> future
        self.failures: dict[str, Exception] = {}  # case id -> why it cannot run
        self.needs: dict[str, tuple[str, ...]] = {}  # case id -> its nodes
        self._reported: set[str] = set()  # nodes whose build events a record already carries
        self.timer = None  # cases are timed on the workers, by the harness's timer

    def submit(self, cases: list[Case]) -> None:
        """Plan ``cases`` one at a time (longest waits first) and submit each one's new nodes
        and its own task at once, so the workers start while the rest is planned."""
        templates = self.plan.study.templates
        ordered = sorted(cases, key=lambda c: schedule_rank(c, templates, self.catalogue))
        missing = self._missing_resources(any(timed(c, self.catalogue) for c in ordered))
        for case in ordered:
            try:
                self.needs[case.id] = self.plan.needs(case)
            except Mnv2BenchError as exc:  # raised again when the case runs, as a local run would
                self.failures[case.id] = exc
                continue
            for node in self.plan.nodes.values():  # upstream first
                if node.key not in self.futures:
                    upstream = [self.futures[k] for k in node.upstream]
                    self.futures[node.key] = self.client.submit(build_node, self.run, node, *upstream,
                                                                key=node.key, resources=self._resources(False))
            if timed(case, self.catalogue) and missing:
                self.failures[case.id] = ConfigError(missing)
                continue
            upstream = [self.futures[k] for k in self.needs[case.id]]
            self.futures[case.id] = self.client.submit(run_case, self.run, case, *upstream,
                                                       key=f"case-{case.id}-{self.run.token}",
                                                       resources=self._resources(timed(case, self.catalogue)))
        log.info("submitted %d artifact builds and %d cases to %s", len(self.plan.nodes),
                 len(ordered) - len(self.failures), self.client.scheduler.address)

    def run_case(self, case: Case) -> dict[str, Any]:
        """``case``'s record, once its task is done (its error, raised here, if it failed)."""
        if case.id in self.failures:
            raise self.failures[case.id]
        if case.id not in self.futures:
            self.submit([case])
        with self._scheduler_answers():
            result = self.futures[case.id].result()
            record = result["record"]
            if record["cache"]["key"]:  # its own model: built or loaded by its node's task, not by this one
                record["cache"]["status"] = self.futures[self.needs[case.id][0]].result()["status"]
            record["cache"]["events"] = self._build_events(case) + record["cache"]["events"]
        self._write_files(record, result["files"])
        return record

    def check(self, case: Case, record: dict[str, Any]) -> None:
        self.plan.study.check(case, record)

    @contextlib.contextmanager
    def _scheduler_answers(self):
        """A scheduler lost mid-run (its futures cancelled, its connection closed) is one
        ClusterLost line, which stops the run; a task's own error passes through."""
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        try:
            yield
        except (FutureCancelledError, CommClosedError, concurrent.futures.CancelledError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise ClusterLost(f"the Dask scheduler at {self.address} stopped answering ({reason}): restart it and "
                              f"rerun; what its workers published stays in the cache") from None

    def _build_events(self, case: Case) -> list[list[str]]:
        """The cache events of the builds ``case`` waited for that no earlier record carried,
        so that a run's records count every build once. A build another client's run asked
        for first (Dask runs one task per key, for every client that wants it) is that run's:
        here it counts as BUILT_BY_ANOTHER_RUN, not as built."""
        pending, stack = [], list(self.needs.get(case.id, ()))
        while stack:
            key = stack.pop()
            if key not in self._reported:
                self._reported.add(key)
                pending.append(key)
                stack.extend(self.plan.nodes[key].upstream)
        results = self.client.gather([self.futures[key] for key in pending])
        return [[name, status if status != "built" or result.get("run") == self.run.token else BUILT_BY_ANOTHER_RUN]
                for result in results for name, status in result["events"]]

    def _write_files(self, record: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> None:
        """Plots a worker made, written where this run keeps its plots; the record names them there."""
        plots = Path(self.run.settings.results_dir) / "plots"
        for metric, (name, data) in files.items():
            target = plots / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            record["metrics"][metric] = str(target)

    def _resources(self, is_timed: bool) -> dict[str, int]:
        resources = {GPU: 1} if self.cuda else {}
        return {**resources, BENCH: 1} if is_timed else resources

    def _missing_resources(self, any_timed: bool) -> str | None:
        """Why the cluster cannot run some tasks (a task asking for a resource no worker
        offers would wait forever), or None. A worker being restarted gets RESOURCE_WAIT_S."""
        wanted = {GPU} if self.cuda else set()
        wanted |= {BENCH} if any_timed else set()
        deadline = time.monotonic() + RESOURCE_WAIT_S
        while True:
            offered = set().union(*offered_resources(self.client))
            if wanted <= offered or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if self.cuda and GPU not in offered:
            raise ConfigError(f"the device is CUDA but no worker of the cluster offers the {GPU} resource: start "
                              f"GPU workers with `dask worker ADDRESS --resources {GPU}=1` (one per GPU)")
        if any_timed and BENCH not in offered:
            return (f"no worker of the cluster offers the {BENCH} resource timed cases run on: start one worker per "
                    f"host with `dask worker ADDRESS --resources {BENCH}=1`")
        return None


def _wait_for_file(path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    if not path.is_file():
        log.warning("waiting up to %.0f s for the Dask scheduler file %s", wait_s, path)
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"--cluster {path}: no scheduler file appeared there in {wait_s:.0f} s; start the "
                              f"scheduler with `dask scheduler --scheduler-file {path}`, or give its tcp:// address")
        time.sleep(0.5)


def _check_address(address: str) -> None:
    """A malformed address in one line (Dask's own error comes with a page of traceback)."""
    from distributed.comm import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)  # an unknown scheme
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--cluster {address}: not a scheduler address ({exc}); give tcp://HOST:PORT or the "
                          f"path of a scheduler file (.json)") from None


def offered_resources(client) -> list[set[str]]:
    """The resources each worker of the client's cluster offers now."""
    return [set(w.get("resources") or {}) for w in client.scheduler_info(n_workers=-1)["workers"].values()]


# the worker's side ---------------------------------------------------------------------------
_STUDIES: dict[str, Study] = {}
_LOCK = threading.Lock()  # a Study is not thread-safe: one task at a time per worker process


def _study(run: RunSpec) -> Study:
    """This worker process's study of the run (the last run's only: a new run drops it)."""
    if run.token not in _STUDIES:
        if (problem := kernels_problem(run.profile.kernels)) is not None:
            raise ConfigError(f"worker {platform.node()}: {problem}")
        _STUDIES.clear()
        torch.set_num_threads(run.threads or _worker_threads())
        log_progress_to(Path(run.settings.results_dir) / "progress.log", f"dask-{platform.node()}-{os.getpid()}")
        _STUDIES[run.token] = Study(run.profile, run.settings)
    return _STUDIES[run.token]


def build_node(run: RunSpec, node: Node, *upstream: dict) -> dict[str, Any]:
    """A Dask task: build (or load) one artifact into the store; its cache events and host."""
    with _LOCK:
        study = _study(run)
        before = len(study.cache.events)
        kind, *args = node.target
        if kind == "artifact":
            artifact = study.artifact(*args)
            entry, status = artifact.key.entry, artifact.status
        else:
            study.start_weights.pretext_state(*args)
            entry, status = study.start_weights.pretext_key(*args).entry, None
        if entry != node.key:  # the worker's study keys it otherwise than the client's (another profile or code)
            raise RuntimeError(f"{node.target}: the plan keyed it {node.key} but the worker built {entry}")
        return {"status": status, "events": study.cache.events[before:], "host": platform.node(), "run": run.token}


def run_case(run: RunSpec, case: Case, *upstream: dict) -> dict[str, Any]:
    """A Dask task: evaluate or measure ``case`` (its model is in the store by now) and return
    its record, with the bytes of the plots it names (the client writes them)."""
    with _LOCK:
        record = _study(run).run_case(case)
    files = {}
    for metric, value in record["metrics"].items():
        if isinstance(value, str) and value.endswith(".png") and Path(value).is_file():
            files[metric] = (Path(value).name, Path(value).read_bytes())
    return {"record": record, "files": files}


def _worker_threads() -> int:
    try:
        from distributed import get_worker
        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return 1
