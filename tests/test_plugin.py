"""The pytest grid end to end on a tiny profile, in subprocesses (serial and xdist)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = """
description = "tiny"
device = "cpu"
eval_batch_size = 64

[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32

[weights]
mobilenet_v2 = "pretext"
resnet50 = "none"

[pretext]
train_size = 64
epochs = 1
batch_size = 32

[techniques.partial_ft]
epochs = 1
batch_size = 32
augment = false
[techniques.full_ft]
epochs = 1
batch_size = 32
[techniques.teacher]
epochs = 1
batch_size = 32
[techniques.scratch]
epochs = 1
batch_size = 32
[techniques.kd]
epochs = 1
batch_size = 32

[floors.tiny]
partial_ft = 0.0
full_ft = 0.0
teacher = 0.0
scratch = 0.0
kd = {kd_floor}
"""
CASES = {f"tiny-mobilenet_v2-{t}" for t in ("partial_ft", "full_ft", "scratch", "kd")} | {"tiny-resnet50-teacher"}


@pytest.fixture
def grid(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    def run(*args, kd_floor="0.0"):
        profile = tmp_path / "tiny.toml"
        profile.write_text(TINY.replace("{kd_floor}", kd_floor))
        return pytester.runpytest_subprocess(
            str(REPO / "benchmarks"), "--profile", str(profile), "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(tmp_path / "results"), "-p", "no:cacheprovider", *args)

    return run


def records(tmp_path):
    entries = []
    for path in (tmp_path / "results").glob("records-*.jsonl"):
        entries += [json.loads(line) for line in path.read_text().splitlines()]
    return entries


def latest_records(tmp_path):
    newest = max((tmp_path / "results").glob("records-*.jsonl"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in newest.read_text().splitlines()]


def test_grid_runs_records_and_reuses_the_cache(grid, tmp_path):
    first = grid("-v")
    first.assert_outcomes(passed=5)
    first.stdout.fnmatch_lines(["*test_training?tiny-mobilenet_v2-full_ft?*PASSED*"])
    entries = latest_records(tmp_path)
    assert {e["case"] for e in entries} == CASES
    record = next(e for e in entries if e["case"] == "tiny-mobilenet_v2-full_ft")["records"][0]
    assert record["provenance"]["upstream"]["partial_ft"]
    assert record["provenance"]["weights"]["source"] == "pretext:synthetic"
    assert record["provenance"]["data"]["stand_in"] is True
    assert len(record["metrics"]["epochs"]) == 1 and record["seed"] == 0

    second = grid()
    second.assert_outcomes(passed=5)
    second.stdout.fnmatch_lines(["*artifacts built: 0, loaded from cache: *"])
    assert all(e["records"][0]["cache"]["status"] == "loaded" for e in latest_records(tmp_path))


def test_grid_under_xdist_records_every_case(grid, tmp_path):
    result = grid("-n", "2")
    result.assert_outcomes(passed=5)
    assert {e["case"] for e in latest_records(tmp_path)} == CASES


def test_failed_floor_still_records_the_metrics(grid, tmp_path):
    result = grid("-k", "kd", kd_floor="1.01")
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(["*below the floor 1.01*"])
    (entry,) = latest_records(tmp_path)
    assert entry["outcome"] == "failed" and entry["records"][0]["metrics"]["accuracy"] < 1.01


def test_unknown_dataset_is_a_usage_error(grid):
    result = grid("--dataset", "cifar100")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown dataset ?'cifar100'?*choose from ?'tiny'?*"])


def test_missing_real_data_fails_with_a_readable_message(grid, tmp_path):
    result = grid("--data-source", "tiny=cifar10", "--data-root", str(tmp_path / "empty"), "-k", "scratch")
    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(["*DataNotFoundError: CIFAR-10 not found*--download*"])
    assert "Traceback" not in result.stdout.str()
