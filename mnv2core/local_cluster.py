"""A Dask cluster on this machine, made of the programs a real one runs: ``dask scheduler`` on
127.0.0.1 and ``dask worker`` processes (the first ``bench_workers`` offering the BENCH
resource), each in a session of its own so that stopping the cluster stops their children
too. For trying ``--cluster`` out, the tox environment and the tests; a real cluster is
started as README says (or by dask-jobqueue, dask-kubernetes)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import kernels
from .cluster import BENCH, connect, offered_resources
from .errors import ConfigError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0


@dataclass
class LocalCluster:
    address: str
    scheduler_file: Path
    folder: Path  # the processes' logs
    processes: list[subprocess.Popen] = field(default_factory=list)

    def client(self):
        return connect(str(self.scheduler_file))

    def wait_for_workers(self, workers: int, bench_workers: int = 1) -> str:
        """Wait until ``workers`` workers are up, ``bench_workers`` of them offering BENCH (a
        killed worker's nanny restarts it); the scheduler's address."""
        client = self.client()

        def ready() -> bool:
            offered = offered_resources(client)
            return len(offered) >= workers and sum(BENCH in r for r in offered) >= bench_workers

        try:
            _wait_for(ready, self.processes, f"the workers (logs: {self.folder})")
            return client.scheduler.address
        finally:
            client.close()


def _launch(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):  # workers first, the scheduler last
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def local_cluster(workers: int = 2, threads: int = 1, bench_workers: int = 1,
                  folder: Path | None = None) -> Iterator[LocalCluster]:
    """Start a scheduler and ``workers`` worker processes of ``threads`` threads on 127.0.0.1;
    stop them all on exit."""
    folder = Path(folder or tempfile.mkdtemp(prefix="mnv2bench-cluster-"))
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [_launch([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                          "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                         folder / "scheduler.log", env)]
    try:
        _wait_for(lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0, processes,
                  f"the scheduler (log: {folder / 'scheduler.log'})")
        for index in range(workers):
            resources = ["--resources", f"{BENCH}=1"] if index < bench_workers else []
            processes.append(_launch([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                      str(scheduler_file), "--host", "127.0.0.1", "--nthreads", str(threads),
                                      "--nworkers", "1", "--no-dashboard", "--name", f"worker-{index}", *resources],
                                     folder / f"worker-{index}.log", env))
        cluster = LocalCluster("", scheduler_file, folder, processes)
        cluster.address = cluster.wait_for_workers(workers, bench_workers)
        yield cluster
    finally:
        _stop(processes)


def _wait_for(ready, processes: list[subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise ConfigError(f"could not start {what}")
        time.sleep(0.2)


class Stopped(Exception):
    """A signal asked the run to stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# SIGINT too: a process started with SIGINT ignored (as a background job, or by a parent that
# ignores it) keeps it ignored, and Python raises no KeyboardInterrupt there
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def run_with_cluster(command: list[str], workers: int, threads: int) -> int:
    """Run ``command`` with MNV2BENCH_CLUSTER pointing at a local cluster started for it. SIGTERM,
    SIGHUP and SIGINT stop the command, then the cluster, and return 128 + the signal's number
    with one line: the cluster's processes run in sessions of their own, and nothing else
    would stop them."""
    def stop(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOPPING_SIGNALS}
    kernels.pin(kernels.requested(command, os.environ))  # the workers' torch loads with the profile's kernels
    try:
        with local_cluster(workers, threads) as cluster:
            print(f"local Dask cluster at {cluster.address}: {workers} worker(s) of {threads} thread(s), "
                  f"the first offering {BENCH}; logs in {cluster.folder}", flush=True)
            child = subprocess.Popen(command, env={**os.environ, "MNV2BENCH_CLUSTER": cluster.address})
            try:
                return child.wait()
            finally:
                _stop_child(child)
    except (Stopped, KeyboardInterrupt) as exc:  # KeyboardInterrupt: SIGINT before the handler was set
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"local-cluster: stopped by {signal.Signals(signum).name}; the command and the cluster are stopped",
              file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_child(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
