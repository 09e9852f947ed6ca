"""The pytest grid end to end on a tiny profile, in subprocesses (serial and xdist)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnv2core import kernel_probe

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
studies = ["mobilenet", "distillation", "speed"]

# a companion study with a latency measurement: the light digit models
[datasets.digits]
source = "digits"
native_size = 28
input_size = 28
train_size = 64
test_size = 32
studies = ["light"]

[models.mobilenet_v2]
weights = "pretext"
[models.resnet50]
weights = "none"

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

[techniques.light_ultra]
epochs = 1
batch_size = 32
augment = false

[techniques.train_speed]
epochs = 1
batch_size = 16
optimizer = "sgd"
augment = false

[studies.speed]
train_images = 32
eval_images = 32
rounds = 1
# one round of 32 images while the unit tests load the machine: a speed-up of 0.4-0.6 (CI,
# Zen 3); the check on the speed-up is tested in test_execution.py
min_train_speedup = 0.0

[studies.light]
batch_sizes = [1]
warmup = 1
rounds = 3

[floors.digits]
light_ultra = 0.0

# these tests gate accuracies (over 32 images: gated all the same); sub-millisecond latencies
# and speed-ups of one run to the next are noise
[gate]
gate_times = false
speedup_ratio = 0.9
min_gated_images = 0

[floors.tiny]
partial_ft = 0.0
full_ft = 0.0
teacher = 0.0
scratch = 0.0
kd = {kd_floor}
"""
CASES = ({f"tiny-mobilenet_v2-{t}" for t in ("partial_ft", "full_ft", "scratch", "kd")}
         | {"tiny-resnet50-teacher", "digits-ultralight-light_ultra", "tiny-mobilenet_v2-train_speed"})
TIMED = "digits-ultralight-light_ultra"


@pytest.fixture
def grid(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "MNV2BENCH_CLUSTER"):
        monkeypatch.delenv(name, raising=False)  # when these tests run under xdist themselves

    def run(*args, kd_floor="0.0", profile_text=TINY, cache="cache"):
        profile = tmp_path / "tiny.toml"
        profile.write_text(profile_text.replace("{kd_floor}", kd_floor))
        return pytester.runpytest_subprocess(
            str(REPO / "benchmarks"), "--profile", str(profile), "--cache-dir", str(tmp_path / cache),
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


# The tiny grid with retrained compressions (MobileNetV2 has dropout), int8 measurements of a
# compressed and of a fine-tuned model, the light model's latency and the speed case; one
# thread per process and the portable kernels, as the smoke profile, so reductions split alike
# whichever process runs a case. Its serial run is the reference of the xdist and cluster runs.
GRID = 'kernels = "portable"\nthreads = 1\n' + TINY.replace(
    "kd = {kd_floor}", "kd = 0.0\nfull_ft_prune = 0.0\nkd_prune = 0.0") + """
[compression]
bases = ["full_ft", "kd"]
[compression.prune]
rounds = 2
amount = 0.3
epochs = 1

[deployment]
bases = ["kd_prune", "full_ft"]
[deployment.int8]
calibration_batches = 1
max_drop = 1.0
"""
GRID_CASES = CASES | {"tiny-mobilenet_v2-full_ft_prune", "tiny-mobilenet_v2-kd_prune",
                      "tiny-mobilenet_v2-kd_prune_int8", "tiny-mobilenet_v2-full_ft_int8"}


def run_grid(tmp_path: Path, profile_text: str, cache: str, *args: str, cluster: str | None = None,
             background: bool = False):
    """The grid in a pytest process of its own (outside pytester: also in session fixtures)."""
    profile = tmp_path / "tiny.toml"  # the profile is named by its file: as the pytester runs name it
    profile.write_text(profile_text.replace("{kd_floor}", "0.0"))
    command = [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "--profile", str(profile),
               "--cache-dir", str(tmp_path / cache), "--results-dir", str(tmp_path / f"results-{cache}"),
               "-p", "no:cacheprovider", "-q", *args, *(["--cluster", cluster] if cluster else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "MNV2BENCH_"))}
    env["PYTHONPATH"] = str(REPO)
    if background:
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def newest_records(results: Path) -> list[dict]:
    newest = max(results.glob("records-*.jsonl"), key=lambda p: p.stat().st_mtime)
    return [r for line in newest.read_text().splitlines() for r in json.loads(line)["records"]]


def accuracies(records: list[dict]) -> dict:
    """Each trained case's accuracy and its per-epoch losses and accuracies."""
    return {r["case"]: (r["metrics"].get("accuracy"),
                        [(h["train_loss"], h["test_accuracy"]) for h in r["metrics"]["epochs"]])
            for r in records if "accuracy" in r["metrics"]}


def test_grid_runs_records_and_reuses_the_cache(grid, tmp_path, serial_grid):
    plan = grid("--plan", "-k", "kd or full_ft")  # what the selected cases need, before anything exists
    assert plan.ret == pytest.ExitCode.OK and not list((tmp_path / "cache").glob("*.pt"))  # scripts can chain it
    plan.stdout.fnmatch_lines(["plan of 2 case(s) (--plan: nothing runs):",
                               " build  pretext-mobilenet_v2-32px", " build  tiny-mobilenet_v2-partial_ft  (after "
                               "pretext-mobilenet_v2-32px)", " build  tiny-mobilenet_v2-full_ft  (after *partial_ft)",
                               " build  tiny-resnet50-teacher", " build  tiny-mobilenet_v2-kd  (after *teacher)",
                               "5 artifacts: 0 cached, 5 to build"])

    records = {r["case"]: r for r in serial_grid.records}  # GRID's cold serial run
    assert set(records) == GRID_CASES
    record = records["tiny-mobilenet_v2-full_ft"]
    assert record["provenance"]["upstream"]["partial_ft"]
    assert record["provenance"]["weights"]["source"] == "pretext:synthetic"
    assert record["provenance"]["data"]["stand_in"] is True
    assert len(record["metrics"]["epochs"]) == 1 and record["seed"] == 0

    written = json.loads(serial_grid.bench.read_text())
    assert {b["param"] for b in written["benchmarks"]} == GRID_CASES and written["mnv2bench"]["complete"]
    assert written["mnv2bench"]["selected"] == sorted(GRID_CASES)
    # serial: latency is timed by pytest-benchmark, whose entries sit beside the cases'
    timed = records[TIMED]
    assert timed["environment"]["latency_timer"] == "pytest-benchmark"
    (own,) = [b for b in written["benchmarks"] if b["name"].endswith("[eager_fp32_b1]")]
    assert own["stats"]["rounds"] == 3
    assert timed["metrics"]["latency"]["eager_fp32_b1_ms"] == pytest.approx(own["stats"]["median"] * 1000)

    shutil.copytree(serial_grid.cache, tmp_path / "cache", dirs_exist_ok=True)  # the plan made the folder
    second = grid("--gate-baseline", str(serial_grid.bench), profile_text=GRID)
    second.assert_outcomes(passed=len(GRID_CASES))
    second.stdout.fnmatch_lines(["*artifacts built: 0, loaded from cache: *",
                                 "*regression gate PASSED: * metric(s) compared*"])
    statuses = {e["case"]: e["records"][0]["cache"]["status"] for e in latest_records(tmp_path)}
    assert statuses.pop("tiny-mobilenet_v2-train_speed") == "measured"  # a speed is of this run: never cached
    assert {statuses.pop(c) for c in GRID_CASES - CASES if c.endswith("_int8")} == {"reused"}  # measurements
    assert set(statuses.values()) == {"loaded"}  # models
    grid("--plan", profile_text=GRID).stdout.fnmatch_lines(["*artifacts: * cached, 0 to build"])

    (entry,) = (p for p in (tmp_path / "cache").glob("tiny-mobilenet_v2-partial_ft-*.pt")
                if len(p.stem.rsplit("-", 1)[1]) == 24 and p.stem.count("-") == 3)  # the model, not its metrics
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated entry: rebuilt, and the summary says so
    third = grid("-k", "partial_ft and not full", profile_text=GRID)
    third.stdout.fnmatch_lines(["*artifacts built: 1, loaded from cache: *",
                                "cache entries found corrupt and rebuilt: 1 (tiny-mobilenet_v2-partial_ft); why: "
                                "*progress.log"])


def test_grid_under_xdist_repeats_the_serial_run_bit_for_bit_and_a_worse_run_fails_the_gate(grid, tmp_path,
                                                                                             serial_grid):
    """Every build is seeded from its case: which worker builds what, in which order, and
    whether a base was built or loaded in this process do not change a single accuracy."""
    bench = tmp_path / "bench.json"
    result = grid("-n", "2", "--benchmark-json", str(bench), "--progress-every", "0.3", profile_text=GRID)
    result.assert_outcomes(passed=len(GRID_CASES))
    # the workers' progress reaches the controller's terminal through the run's progress log
    result.stdout.fnmatch_lines([f"*mnv2bench] */{len(GRID_CASES)} cases finished, 0 min 0* elapsed, *gw*: tiny-*"])
    assert "Not saving anything" not in result.stdout.str() + result.stderr.str() and bench.is_file()
    result.stdout.fnmatch_lines(["*Study summary*", "*Full Fine-Tuning*"])
    records = [r for e in latest_records(tmp_path) for r in e["records"]]
    assert {r["case"] for r in records} == GRID_CASES == {r["case"] for r in serial_grid.records}
    assert accuracies(records) == accuracies(serial_grid.records)
    # the portable kernels are pinned before torch loads, in the controller and every worker
    assert all(r["environment"]["kernels"] == {"profile": "portable", "cpu_capability": "AVX2",
                                               "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                               "MKL_CBWR": "AVX2"} for r in records if "environment" in r)
    # xdist switches pytest-benchmark off: the harness's own timer gives the same figures
    timed = next(r for r in records if r["case"] == TIMED)
    assert timed["environment"]["latency_timer"] == "harness" and timed["metrics"]["latency"]["eager_fp32_b1_ms"] > 0
    document = json.loads(bench.read_text())
    assert {b["param"] for b in document["benchmarks"]} == GRID_CASES
    assert document == json.loads((tmp_path / "results" / "latest.json").read_text())
    assert set(document["mnv2bench"]["kernel_probe"]) == set(kernel_probe.OPS)  # the controller's, pinned as well

    # A baseline 10 points better than this run, gated on a slice (-k full_ft, warm, serial):
    # every selected accuracy is a regression, and the cases left out are not gated
    sliced = sorted(c for c in GRID_CASES if "full_ft" in c)
    regressed = 0
    for item in document["benchmarks"]:
        if "accuracy" in item["extra_info"]["metrics"]:
            item["extra_info"]["metrics"]["accuracy"] += 0.10
            regressed += item["param"] in sliced
    baseline = tmp_path / "better.json"
    baseline.write_text(json.dumps(document))
    gated = grid("-k", "full_ft", "--gate-baseline", str(baseline), profile_text=GRID)
    assert gated.ret == pytest.ExitCode.TESTS_FAILED and 0 < regressed < len(GRID_CASES)
    gated.stdout.fnmatch_lines([f"*regression gate FAILED ({regressed} regression(s))*", "*FAIL tiny-*-10.0 points*"])
    gated.stdout.fnmatch_lines(["*baseline case(s) not selected in this run*"])
    assert json.loads((tmp_path / "results" / "latest.json").read_text())["mnv2bench"]["selected"] == sliced


def test_failed_floor_still_records_the_metrics(grid, tmp_path, serial_grid):
    shutil.copytree(serial_grid.cache, tmp_path / "cache")  # the distilled model, trained: only its floor changes
    result = grid("-k", "kd and not prune", profile_text=GRID.replace("\nkd = 0.0\n", "\nkd = 1.01\n"))
    result.assert_outcomes(failed=1, deselected=len(GRID_CASES) - 1)
    result.stdout.fnmatch_lines(["*below the floor 1.01*"])
    (entry,) = latest_records(tmp_path)
    assert entry["outcome"] == "failed" and entry["records"][0]["metrics"]["accuracy"] < 1.01


def test_unknown_dataset_is_a_usage_error(grid):
    result = grid("--dataset", "cifar100")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown dataset ?'cifar100'?*choose from ?'tiny'?*"])


@pytest.mark.parametrize("option, value, message", [
    ("--data-source", "tiny", "*bad --data-source 'tiny': use NAME=SOURCE*"),
    ("--data-source", "cifar100=cifar10", "*--data-source names 'cifar100', which profile*lacks*'tiny'*"),
    ("--results-dir", "{file}", "*--results-dir *a-file: not a writable folder (a file is there)*MNV2BENCH_RESULTS_DIR*"),
    ("--cache-dir", "{file}/below", "*--cache-dir *below: not a writable folder*MNV2BENCH_CACHE_DIR*"),
    ("--threads", "0", "*--threads 0: give a whole number of torch threads >= 1*"),
    ("--weights", "mobilenetv2={file}", "*--weights names ?'mobilenetv2'?, which this run does not use; its models: "
                                        "?'mobilenet_v2', 'resnet50', 'ultralight'?"),
])
def test_bad_start_up_options_are_one_line_before_anything_runs(grid, tmp_path, option, value, message):
    (tmp_path / "a-file").write_text("not a folder")
    result = grid(option, value.format(file=tmp_path / "a-file"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert not list((tmp_path / "results").glob("records-*.jsonl"))  # nothing ran


def test_the_grid_runs_on_a_shared_s3_cache_and_a_second_run_builds_nothing(grid, tmp_path, s3_endpoint, monkeypatch):
    for name, value in {"FSSPEC_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)  # how a user points s3fs at an endpoint
    url = f"s3://mnv2bench-grid/{tmp_path.name}"
    first = grid("--cache-dir", url, "-k", "scratch")
    first.assert_outcomes(passed=1, deselected=8)
    assert "artifacts built: 2," in first.stdout.str()  # the model and its test accuracy
    second = grid("--cache-dir", url, "-k", "scratch")  # a fresh process: everything comes from the store
    second.assert_outcomes(passed=1, deselected=8)
    assert "artifacts built: 0," in second.stdout.str()


def test_a_store_that_does_not_answer_stops_the_run_in_one_line(grid, tmp_path, monkeypatch):
    for name, value in {"FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_MAX_ATTEMPTS": "1", "MNV2BENCH_STORE_RETRY_S": "1"}.items():
        monkeypatch.setenv(name, value)  # nothing listens on port 9
    result = grid("--cache-dir", "s3://mnv2bench-down/x", "-k", "scratch or full_ft")
    output = result.stdout.str()
    assert "! Interrupted: StoreUnavailable: artifact store s3://mnv2bench-down/x did not answer (open: " in output
    assert "--cache-dir" in output and "Traceback" not in output
    assert "1 error in" in output  # the second selected case never starts


def test_missing_real_data_stops_the_run_at_start_up_in_one_line(grid, tmp_path):
    result = grid("--data-source", "tiny=cifar10", "--data-root", str(tmp_path / "empty"), "-k", "scratch or kd")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("DataNotFoundError: CIFAR-10 not found") == 1 and "--download" in output
    assert "Traceback" not in output and not list((tmp_path / "results").glob("records-*.jsonl"))


def test_undecodable_images_stop_the_run_once_each_named_once(grid, tmp_path):
    """Under -n 2 too: the controller reads the folder once, before any worker runs a case."""
    from PIL import Image
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / "woof" / split / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(tmp_path / "woof" / split / name / f"{i}.png")
    (tmp_path / "woof" / "train" / "cat" / "notes.png").write_text("text saved as a png")
    (tmp_path / "woof" / "test" / "dog" / "empty.jpg").write_bytes(b"")
    result = grid("-n", "2", "--data-source", "tiny=imagefolder:" + str(tmp_path / "woof"), "-k", "scratch or kd")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("notes.png") == 1 and output.count("empty.jpg") == 1, output
    assert "ERROR: DataNotFoundError: 2 image(s) cannot be decoded" in output and "Traceback" not in output
    assert not list((tmp_path / "results").glob("records-*.jsonl"))  # no case ran


MODELS = """
description = "two model families and a ready-trained network"
device = "cpu"
eval_batch_size = 64

[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32
models = ["tf_lite0", "resnet20"]

[models.tf_lite0]
source = "timm"
arch = "tf_efficientnet_lite0"
weights = "none"
[models.resnet20]
source = "builtin"
arch = "cifar_resnet20"
weights = "{weights}"
trained = true

[techniques.partial_ft]
epochs = 1
batch_size = 16
[techniques.ready]
epochs = 0
batch_size = 16

[deployment]
bases = ["partial_ft", "ready"]
[deployment.int8]
calibration_batches = 1
max_drop = 1.0

[floors.tiny]
partial_ft = 0.0
ready = 0.0
"""


def test_a_second_family_and_a_ready_trained_model_run_and_fx_skips_with_its_reason(grid, tmp_path):
    import torch

    from mnv2core.models import ModelSpec, build_model

    torch.manual_seed(0)
    trained = build_model(ModelSpec("r", "builtin", "cifar_resnet20"), 10)
    torch.save(trained.net.state_dict(), tmp_path / "r20.pth")
    result = grid("-v", "-rs", profile_text=MODELS.replace("{weights}", str(tmp_path / "r20.pth")))
    result.assert_outcomes(passed=3, skipped=4)  # 3 of them: the empty compression, companion and speed grids
    result.stdout.fnmatch_lines(["*tiny-tf_lite0-partial_ft_int8*SKIPPED*",
                                 "*SKIPPED*partial_ft_int8 does not apply to tf_lite0: FX could not trace*"])
    entries = {e["case"]: e for e in latest_records(tmp_path)}
    ready = entries["tiny-resnet20-ready"]["records"][0]
    assert ready["metrics"]["epochs"] == [] and ready["provenance"]["weights"]["source"] == "file:r20.pth"
    assert ready["provenance"]["network"]["arch"] == "cifar_resnet20"
    assert entries["tiny-resnet20-ready_int8"]["outcome"] == "passed"
    assert "FX could not trace" in entries["tiny-tf_lite0-partial_ft_int8"]["error"]


def test_xdist_hands_out_one_case_at_a_time_unless_told(pytester, monkeypatch):
    monkeypatch.chdir(REPO)
    assert pytester.parseconfigure("-p", "fixtures.plugin", "-n", "2").getoption("maxschedchunk") == 1
    assert pytester.parseconfigure("-p", "fixtures.plugin", "-n", "2", "--maxschedchunk", "4").getoption("maxschedchunk") == 4
