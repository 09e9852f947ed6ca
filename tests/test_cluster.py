"""The grid on a Dask cluster: a scheduler on 127.0.0.1 and two one-thread workers, each a
`dask` program in a process of its own (``local_cluster``), and the tiny grid run with
--cluster against them."""
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from test_plugin import GRID, REPO, TINY, accuracies, newest_records, run_grid

from mnv2core import kernels
from mnv2core.cache import ArtifactCache
from mnv2core.errors import ConfigError
from mnv2core.profiles import load_profile
from mnv2core.study import Settings, Study
from mnv2core.techniques import catalogue

pytest.importorskip("distributed")
from mnv2core import cluster as cluster_module  # noqa: E402
from mnv2core.cluster import timed  # noqa: E402
from mnv2core.local_cluster import local_cluster  # noqa: E402
from mnv2core.planning import Plan  # noqa: E402

# one long build to kill a worker in: the teacher for several epochs of a larger training set
SLOW = TINY.replace("kd = {kd_floor}", "kd = 0.0").replace(
    "[techniques.teacher]\nepochs = 1", "[techniques.teacher]\nepochs = 8")


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """Workers whose torch loads with GRID's portable kernels, as ``local-cluster`` pins them
    from its command's profile."""
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as environment:
            for name, value in kernels.PORTABLE.items():
                environment.setenv(name, value)
            started = stack.enter_context(local_cluster(workers=2, threads=1, folder=tmp_path_factory.mktemp("cluster")))
        yield started


def built(records: list[dict]) -> collections.Counter:
    return collections.Counter(name for r in records for name, status in r["cache"]["events"] if status == "built")


def test_the_plan_names_each_artifact_by_its_cache_entry_with_its_upstream(tmp_path):
    """Planning builds nothing, and keys each model exactly as building it does."""
    (tmp_path / "grid.toml").write_text(GRID)
    profile = load_profile(str(tmp_path / "grid.toml"), catalogue())
    settings = Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    planner = Plan(Study(profile, settings))
    kd_prune = planner.study.case("tiny", "kd_prune")
    (entry,) = planner.needs(kd_prune)
    assert not list((tmp_path / "cache").glob("tiny-*.pt"))  # nothing built, nothing written
    nodes = planner.nodes

    def upstream(key):  # the node's upstream by label
        return {k.rsplit("-", 1)[0] for k in nodes[key].upstream}

    assert upstream(entry) == {"tiny-mobilenet_v2-kd"}
    kd = next(k for k in nodes if k.startswith("tiny-mobilenet_v2-kd-"))
    assert upstream(kd) == {"tiny-resnet50-teacher"}
    (full,) = planner.needs(planner.study.case("tiny", "full_ft"))
    partial = next(iter(nodes[full].upstream))
    assert partial.startswith("tiny-mobilenet_v2-partial_ft-") and upstream(partial) == {"pretext-mobilenet_v2-32px"}
    assert list(nodes).index(partial) < list(nodes).index(full)  # upstream first
    assert timed(planner.study.case("digits", "light_ultra"), catalogue())
    assert not timed(planner.study.case("tiny", "full_ft"), catalogue())

    study = Study(profile, settings)  # the real build gives the planned key
    assert entry == study.artifact("tiny", "kd_prune").key.entry


def test_a_grid_on_a_two_worker_cluster_builds_each_artifact_once_with_a_serial_runs_accuracies(dask_cluster, tmp_path,
                                                                                                 serial_grid):
    on_cluster = run_grid(tmp_path, GRID, "shared", cluster=dask_cluster.address)
    assert on_cluster.returncode == 0, on_cluster.stdout[-3000:]

    records = newest_records(tmp_path / "results-shared")
    assert {r["case"] for r in records} == {r["case"] for r in serial_grid.records}
    assert accuracies(records) == accuracies(serial_grid.records)  # bit for bit
    counts = built(records)
    assert counts and max(counts.values()) == 1, counts  # every artifact built once...
    entries = {p.name.rsplit("-", 1)[0] for p in (tmp_path / "shared").glob("*.pt")}
    assert entries == set(counts)  # ...and every entry in the store was built by this run
    timed_records = [r for r in records if r["case"] in ("digits-ultralight-light_ultra", "tiny-mobilenet_v2-train_speed")]
    assert len(timed_records) == 2 and all(r["environment"]["host"] for r in timed_records)
    # a second run on the cluster builds nothing: the killed-worker test's rerun proves it


def test_a_worker_killed_mid_build_then_the_session_interrupted_and_rerun_leave_an_intact_store_and_rebuild_nothing(
        dask_cluster, tmp_path):
    """Two faults in one run: a worker killed while it builds the teacher (its nanny restarts
    it, the scheduler reruns the task), then Ctrl-C in the session. The rerun completes,
    rebuilds nothing that was published, and every entry in the store is whole."""
    running = run_grid(tmp_path, SLOW, "store", "-k", "not speed and not light", cluster=dask_cluster.address,
                       background=True)
    store, client = tmp_path / "store", dask_cluster.client()
    try:
        victim, deadline = None, time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and running.poll() is None:
            for worker, keys in client.processing().items():
                if any(str(k).startswith("tiny-resnet50-teacher-") for k in keys):
                    victim = worker
            time.sleep(0.2)
        assert victim, "the teacher's build never started"
        time.sleep(2)  # well inside its eight epochs
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        print(f"killed worker {victim} (pid {pid}) while it built the teacher")
    finally:
        client.close()
    while not list(store.glob("tiny-mobilenet_v2-partial_ft-*.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    running.send_signal(signal.SIGINT)  # Ctrl-C in the session, mid-run
    output, _ = running.communicate(timeout=120)
    print(output[-1500:])
    published = {path.stem.rsplit("-", 1)[0] for path in store.glob("*.pt")}
    assert "tiny-mobilenet_v2-partial_ft" in published
    scheduler_log = (dask_cluster.folder / "scheduler.log").read_text()
    assert f"Remove worker addr: {victim}" in scheduler_log
    dask_cluster.wait_for_workers(2)  # its nanny restarted it

    rerun = run_grid(tmp_path, SLOW, "store", "-k", "not speed and not light", cluster=dask_cluster.address)
    assert rerun.returncode == 0 and "5 passed" in rerun.stdout, rerun.stdout[-3000:]
    rebuilt = built(newest_records(tmp_path / "results-store"))
    assert not published & set(rebuilt), published & set(rebuilt)
    cache = ArtifactCache(store)
    for path in store.glob("*.pt"):  # every published entry is whole: the killed build published nothing
        name, key = path.stem.rsplit("-", 1)
        assert cache._load(path, key, path.stem) is not None, path
    assert [path.stem.rsplit("-", 1)[0] for path in store.glob("*.pt")].count("tiny-resnet50-teacher") == 1


def test_an_address_where_no_scheduler_answers_is_one_line(monkeypatch):
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ConfigError, match="no Dask scheduler answers there.*dask scheduler"):
        cluster_module.connect("tcp://127.0.0.1:9")


@pytest.mark.parametrize("address, message", [
    ("nonsense://x", r"--cluster nonsense://x: not a scheduler address \(unknown address scheme 'nonsense'"),
    ("127.0.0.1:8799x", r"--cluster 127.0.0.1:8799x: not a scheduler address \(invalid literal"),
])
def test_a_malformed_scheduler_address_is_one_line(address, message):
    with pytest.raises(ConfigError, match=message):
        cluster_module.connect(address)


def test_a_scheduler_file_that_never_appears_is_waited_for_then_one_line(tmp_path, caplog):
    missing = tmp_path / "scheduler.json"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"--cluster {missing}: no scheduler file appeared there in 1 s; start "
                                          rf"the scheduler with `dask scheduler --scheduler-file {missing}`"):
        cluster_module.connect(str(missing), file_wait_s=1.0)
    assert 1.0 <= time.monotonic() - started < 10
    assert f"waiting up to 1 s for the Dask scheduler file {missing}" in caplog.text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_local_cluster_stopped_by_a_signal_stops_its_command_and_every_cluster_process(tmp_path, signum):
    pid_file = tmp_path / "command.pid"
    command = [sys.executable, "-m", "mnv2core", "local-cluster", "--workers", "1", "--", sys.executable, "-c",
               f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"]
    def ignoring_sigint():  # as a background job starts it: Python then raises no KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    running = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=ignoring_sigint)
    try:
        started = running.stdout.readline()
        assert "local Dask cluster at" in started, started + running.stderr.read()
        folder = started.rsplit("logs in ", 1)[1].strip()
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        running.send_signal(signum)
        try:
            _, err = running.communicate(timeout=90)
        except subprocess.TimeoutExpired:  # say what still ran, and what it printed
            left = subprocess.run(["ps", "-o", "pid,pgid,stat,etime,args", "--ppid", str(running.pid)],
                                  capture_output=True, text=True).stdout
            running.kill()
            pytest.fail(f"local-cluster still ran 90 s after {signum!r}; its children:\n{left}\n"
                        f"its stderr:\n{running.communicate()[1]}")
    finally:
        running.kill()
    assert running.returncode == 128 + signum
    assert err.strip().splitlines() == [f"local-cluster: stopped by {signal.Signals(signum).name}; the command and "
                                        f"the cluster are stopped"]
    survivors = subprocess.run(["pgrep", "-f", folder], capture_output=True, text=True).stdout.split()
    assert not survivors, f"cluster processes left running: {survivors}"
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_progress_goes_to_the_current_runs_log_when_a_worker_serves_another_run(tmp_path):
    import logging

    from mnv2core.progress import log_progress_to
    log = logging.getLogger("mnv2bench.test")
    try:
        log_progress_to(tmp_path / "first" / "progress.log", "worker")
        log.info("for the first run")
        log_progress_to(tmp_path / "second" / "progress.log", "worker")
        log.info("for the second run")
    finally:
        for handler in [h for h in logging.getLogger("mnv2bench").handlers if getattr(h, "_mnv2", False)]:
            logging.getLogger("mnv2bench").removeHandler(handler)
            handler.close()
    assert "for the second run" not in (tmp_path / "first" / "progress.log").read_text()
    assert "for the second run" in (tmp_path / "second" / "progress.log").read_text()


class Done:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


def bare_run(token="mine"):
    """A ClusterRun with no cluster behind it: what its record keeping needs, stubbed."""
    run = cluster_module.ClusterRun.__new__(cluster_module.ClusterRun)
    run.run, run.address, run.failures, run._reported = SimpleNamespace(token=token), "tcp://10.0.0.9:8786", {}, set()
    run.client = SimpleNamespace(gather=lambda futures: [f.result() for f in futures])
    return run


def test_builds_another_clients_run_asked_for_first_are_not_counted_as_this_runs():
    run = bare_run()
    run.plan = SimpleNamespace(nodes={"a": SimpleNamespace(upstream=()), "b": SimpleNamespace(upstream=("a",))})
    run.needs = {"case": ("b",)}
    run.futures = {"a": Done({"events": [("a", "built")], "run": "theirs"}),
                   "b": Done({"events": [("b", "built")], "run": "mine"})}
    events = run._build_events(SimpleNamespace(id="case"))
    assert sorted(events) == [["a", cluster_module.BUILT_BY_ANOTHER_RUN], ["b", "built"]]


def test_a_scheduler_lost_mid_run_is_one_line_that_stops_the_run():
    from distributed.client import FutureCancelledError

    from mnv2core.errors import ClusterLost, StopsTheRun
    run = bare_run()
    run.futures = {"case": Done(error=FutureCancelledError("case", "scheduler-connection-lost"))}
    with pytest.raises(ClusterLost) as error:
        run.run_case(SimpleNamespace(id="case"))
    assert isinstance(error.value, StopsTheRun) and "\n" not in str(error.value)
    assert str(error.value).startswith("the Dask scheduler at tcp://10.0.0.9:8786 stopped answering "
                                       "(scheduler-connection-lost): restart it and rerun")
