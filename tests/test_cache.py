import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch

from mnv2core.cache import ArtifactCache
from mnv2core.keys import ArtifactKey


def toy_key(**recipe) -> ArtifactKey:
    return ArtifactKey("toy", "toy", {"lr": 0.1, **recipe}, "code")


KEY = toy_key()


def payload(value=1.0):
    return {"weights": torch.full((3, 4), value), "history": [{"epoch": 1, "acc": 0.5}]}


def counting_build(counter: list, value=1.0):
    def build():
        counter.append(1)
        return payload(value)
    return build


def test_second_fetch_loads_without_building(tmp_path):
    cache = ArtifactCache(tmp_path)
    built = []
    assert not cache.holds(KEY)
    first = cache.fetch(KEY, counting_build(built))
    assert cache.holds(KEY) and not cache.holds(toy_key(lr=0.2))
    second = ArtifactCache(tmp_path).fetch(KEY, counting_build(built))
    assert (first.status, second.status, len(built)) == ("built", "loaded", 1)
    assert torch.equal(second.payload["weights"], payload()["weights"])
    assert second.payload["history"] == payload()["history"]


def test_the_cache_takes_only_an_artifact_key(tmp_path):
    with pytest.raises(TypeError, match="takes an ArtifactKey"):
        ArtifactCache(tmp_path).fetch({"kind": "toy", "lr": 0.1}, counting_build([]))
    assert not list(tmp_path.glob("*.pt"))


def test_config_change_builds_a_new_entry(tmp_path):
    cache = ArtifactCache(tmp_path)
    built = []
    cache.fetch(KEY, counting_build(built))
    result = cache.fetch(toy_key(lr=0.01), counting_build(built, 2.0))
    assert result.status == "built" and len(built) == 2
    assert result.payload["weights"][0, 0] == 2.0


def corrupt_truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_garbage(path: Path):
    path.write_bytes(os.urandom(200))


def corrupt_tensor_bytes(path: Path):
    """Flip one stored tensor value while keeping a valid file: only the digest catches it."""
    entry = torch.load(path, weights_only=True)
    entry["payload"]["weights"][0, 0] += 1
    torch.save(entry, path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, reading the garbage
@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_garbage, corrupt_tensor_bytes])
def test_corrupt_entry_is_rebuilt(tmp_path, corrupt, caplog):
    cache = ArtifactCache(tmp_path)
    built = []
    path = cache.fetch(KEY, counting_build(built)).path
    corrupt(path)
    result = ArtifactCache(tmp_path).fetch(KEY, counting_build(built))
    assert result.status == "built" and len(built) == 2
    assert "corrupt" in caplog.text
    assert ArtifactCache(tmp_path).fetch(KEY, counting_build(built)).status == "loaded"


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.fetch(KEY, broken)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]


def test_refresh_rebuilds_once_per_run(tmp_path):
    built = []
    ArtifactCache(tmp_path, run_id="old").fetch(KEY, counting_build(built))
    refreshing = ArtifactCache(tmp_path, run_id="new", refresh=True)
    assert refreshing.fetch(KEY, counting_build(built)).status == "built"
    # another worker of the same run reuses what this run built
    again = ArtifactCache(tmp_path, run_id="new", refresh=True).fetch(KEY, counting_build(built))
    assert again.status == "loaded" and len(built) == 2


def _worker(root: str, marker_dir: str, queue) -> None:
    def build():
        Path(marker_dir, f"built-{os.getpid()}").touch()
        time.sleep(1.0)  # long enough for the others to hit the lock
        return payload(7.0)

    result = ArtifactCache(Path(root)).fetch(KEY, build)
    queue.put((result.status, float(result.payload["weights"].sum())))


def test_concurrent_workers_build_once(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_worker, args=(str(tmp_path / "cache"), str(markers), queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert len(list(markers.iterdir())) == 1
    assert sorted(status for status, _ in results) == ["built", "loaded", "loaded", "loaded"]
    assert {total for _, total in results} == {7.0 * 12}


def test_a_read_only_cache_serves_what_it_holds_and_names_what_it_lacks(tmp_path, monkeypatch):
    import mnv2core.cache as cache_module
    from mnv2core.errors import ConfigError
    from mnv2core.folders import writable_folder
    built = []
    ArtifactCache(tmp_path).fetch(KEY, counting_build(built))

    class NoLockHere:  # what a read-only folder does to a lock file
        def __init__(self, path):
            pass

        def acquire(self, timeout):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_module, "FileLock", NoLockHere)
    read_only = ArtifactCache(tmp_path)
    assert read_only.fetch(KEY, counting_build(built)).status == "loaded" and len(built) == 1
    with pytest.raises(ConfigError, match=r"is read-only and holds no valid entry for toy .*--cache-dir"):
        read_only.fetch(toy_key(lr=0.2), counting_build(built))
    assert len(built) == 1  # nothing built where nothing can be written

    def no_writing(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("mnv2core.folders.tempfile.TemporaryFile", no_writing)
    assert writable_folder(tmp_path, "--cache-dir", "MNV2BENCH_CACHE_DIR", read_only_ok=True) == tmp_path
    with pytest.raises(ConfigError, match=r"--results-dir .*: not a writable folder \(Permission denied\)"):
        writable_folder(tmp_path, "--results-dir", "MNV2BENCH_RESULTS_DIR")


def test_a_write_that_fills_the_disk_names_the_folder_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import shutil

    import mnv2core.cache as cache_module
    from mnv2core.errors import StorageError
    real_save, built = torch.save, []

    def disk_fills_midway(entry, out):  # what torch.save does when the disk fills under it
        out.write(b"x" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 4000")

    monkeypatch.setattr(cache_module.torch, "save", disk_fills_midway)
    disk = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda folder: disk._replace(free=10 * 2**20))
    with pytest.raises(StorageError, match=r"cache folder .*: its disk is full \(10 MB free\) after 0 MB of toy-.*--cache-dir"):
        ArtifactCache(tmp_path).fetch(KEY, counting_build(built))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # no half-written entry

    # with room on the disk, the failure is not blamed on it
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda folder: disk._replace(free=10 * 2**30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        ArtifactCache(tmp_path).fetch(KEY, counting_build(built))
    monkeypatch.setattr(cache_module.torch, "save", real_save)
    assert ArtifactCache(tmp_path).fetch(KEY, counting_build(built)).status == "built" and len(built) == 3
