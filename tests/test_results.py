import json

import pytest
from results_factory import document, entry

from mnv2core.folders import write_json_atomic
from mnv2core.results import ResultsError, case_items, load_results, merge_entries, read_records

SCHEMA_KEYS = {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
ITEM_KEYS = {"group", "name", "fullname", "params", "param", "extra_info", "options", "stats"}


def test_results_follow_the_pytest_benchmark_schema():
    results = document([entry("ds-mobilenet_v2-kd", 0.61)])
    assert SCHEMA_KEYS <= set(results)
    (item,) = results["benchmarks"]
    assert set(item) == ITEM_KEYS
    assert item["group"] == "training" and item["param"] == "ds-mobilenet_v2-kd"
    assert item["stats"]["rounds"] == 1 and item["stats"]["mean"] == 1.5  # no measure_seconds: the test's time
    assert item["options"]["measures"].startswith("wall time of the test")
    extra = item["extra_info"]
    assert extra["metrics"]["accuracy"] == 0.61 and extra["seed"] == 0 and extra["cache"]["key"]


def test_benchmark_stats_time_the_measurement_not_getting_the_model():
    (item,) = document([entry("ds-mobilenet_v2-kd", 0.61, metrics={"build_seconds": 9.0, "measure_seconds": 0.25})])[
        "benchmarks"]
    assert item["stats"]["mean"] == 0.25 and "build_seconds" in item["options"]["measures"]


def test_a_crashed_run_keeps_every_entry_written_before_the_crash(tmp_path):
    records = tmp_path / "records-run.jsonl"
    finished = [entry("ds-mobilenet_v2-partial_ft", 0.8), entry("ds-mobilenet_v2-full_ft", 0.85)]
    cut_short = json.dumps(entry("ds-mobilenet_v2-kd", 0.6))[:40]
    records.write_text("".join(json.dumps(e) + "\n" for e in finished) + cut_short)

    entries = read_records(records)
    grid = [e["case"] for e in finished] + ["ds-mobilenet_v2-kd"]
    items = case_items(document(entries, cases=grid))
    assert set(items) == {"ds-mobilenet_v2-partial_ft", "ds-mobilenet_v2-full_ft"}
    assert items["ds-mobilenet_v2-full_ft"]["metrics"]["accuracy"] == 0.85


def test_a_failing_teardown_outranks_the_passing_call_and_keeps_its_record():
    call = entry("ds-mobilenet_v2-kd", 0.6)
    teardown = entry("ds-mobilenet_v2-kd", outcome="failed", when="teardown", error="boom")
    (merged,) = merge_entries([call, teardown])
    assert merged["outcome"] == "failed" and merged["error"] == "boom"
    assert merged["records"][0]["metrics"]["accuracy"] == 0.6 and merged["duration"] == 3.0


def test_write_is_atomic_and_load_checks_the_shape(tmp_path):
    target = tmp_path / "out" / "results.json"
    write_json_atomic(target, document([entry("ds-mobilenet_v2-kd", 0.6)]))
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]
    assert load_results(target)["benchmarks"][0]["param"] == "ds-mobilenet_v2-kd"

    target.write_text('{"benchmarks": [')
    with pytest.raises(ResultsError, match="not valid JSON.*merge"):
        load_results(target)
    target.write_text('{"rows": []}')
    with pytest.raises(ResultsError, match="no 'benchmarks' list"):
        load_results(target)
    with pytest.raises(ResultsError, match="no such results file"):
        load_results(tmp_path / "absent.json")


def test_merging_a_records_file_that_is_not_there_is_one_line(tmp_path, capsys):
    from mnv2core.cli import main
    assert main(["merge", str(tmp_path / "records-x.jsonl"), "-o", str(tmp_path / "out.json")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no records file {tmp_path / 'records-x.jsonl'}: a run writes records-RUN.jsonl in its "
        f"--results-dir (.mnv2results by default)"]
    assert not (tmp_path / "out.json").exists()
