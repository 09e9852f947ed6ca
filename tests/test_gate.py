from results_factory import MACHINE, document, entry

from mnv2core.gate import Tolerances, compare, gated_metrics

TOLERANCES = Tolerances(accuracy_points=0.02, speedup_ratio=0.10, time_ratio=0.25)
KD, FT = "ds-mobilenet_v2-kd", "ds-mobilenet_v2-full_ft"


def gate(baseline_entries, result_entries, tolerances=TOLERANCES, machine=None, baseline_machine=None, run_machine=None):
    return compare(document(baseline_entries, machine=baseline_machine),
                   document(result_entries, machine=run_machine or machine), tolerances)


def test_within_tolerance_and_improvements_pass():
    report = gate([entry(KD, 0.60), entry(FT, 0.80)], [entry(KD, 0.585), entry(FT, 0.95)])
    assert report.passed and report.compared == 2 and report.improved == 1
    assert "PASSED" in report.render()


def test_an_accuracy_drop_beyond_tolerance_fails_with_a_readable_line():
    report = gate([entry(KD, 0.60), entry(FT, 0.80)], [entry(KD, 0.50), entry(FT, 0.80)])
    assert not report.passed
    assert report.failures == [f"{KD}: accuracy 0.6000 -> 0.5000 (-10.0 points, tolerance 2.0)"]


def test_a_missing_case_or_metric_fails():
    report = gate([entry(KD, 0.60), entry(FT, 0.80, metrics={"int8_accuracy": 0.79})],
                  [entry(KD, outcome="failed", error="DataNotFoundError"), entry(FT, 0.80)])
    assert len(report.failures) == 2
    assert report.failures[0].startswith(f"{KD}: missing (failed without metrics)")
    assert report.failures[1] == f"{FT}: metric int8_accuracy is missing from the results"
    assert not gate([entry(KD, 0.6)], []).passed


def test_a_case_the_run_did_not_select_is_not_gated_but_a_selected_one_missing_fails():
    baseline = document([entry(KD, 0.60), entry(FT, 0.80)])
    results = document([entry(FT, 0.80)])
    results["mnv2bench"]["selected"] = [FT]  # e.g. -k full_ft
    report = compare(baseline, results, TOLERANCES)
    assert report.passed and report.compared == 1
    assert "1 baseline case(s) not selected in this run" in report.render()
    results["mnv2bench"]["selected"] = [FT, KD]  # selected, yet no result: it crashed or hung
    assert not compare(baseline, results, TOLERANCES).passed


def test_per_metric_tolerance_overrides_the_default():
    loose = Tolerances(accuracy_points=0.02, per_metric={"accuracy": 0.2})
    assert gate([entry(KD, 0.60)], [entry(KD, 0.45)], loose).passed


def test_latency_regresses_on_the_same_machine_but_only_warns_across_machines():
    base = [entry(FT, 0.8, metrics={"latency": {"onnx_b1_ms": 2.0}, "int8_speedup": 2.0})]
    slower = [entry(FT, 0.8, metrics={"latency": {"onnx_b1_ms": 3.0}, "int8_speedup": 2.0})]
    same = gate(base, slower)
    assert same.failures == [f"{FT}: latency.onnx_b1_ms 2 -> 3 (x1.50, tolerance 25%)"]
    other = gate(base, slower, machine={**MACHINE, "node": "laptop"})
    assert other.passed and "different machine" in other.warnings[0]


def test_a_speedup_ratio_is_gated_on_any_machine():
    base = [entry(FT, 0.8, metrics={"int8_speedup": 2.0})]
    report = gate(base, [entry(FT, 0.8, metrics={"int8_speedup": 1.5})], machine={**MACHINE, "node": "x"})
    assert not report.passed and "int8_speedup" in report.failures[0]


def test_only_named_metric_kinds_are_gated():
    extra = {"metrics": {"accuracy": 0.5, "floor": 0.3, "train_seconds": 9.0, "epochs": [{"a": 1}],
                         "latency": {"ort_b1_ms": 1.0, "batch": 1}, "throughput_per_second": 5, "ok": True}}
    assert gated_metrics(extra) == {"accuracy": 0.5, "latency.ort_b1_ms": 1.0, "throughput_per_second": 5.0}


def test_cli_gate_uses_the_baseline_profile_tolerance_and_exits_1_on_regression(tmp_path, capsys):
    import json

    from mnv2core.cli import main
    baseline, results = tmp_path / "base.json", tmp_path / "run.json"
    baseline.write_text(json.dumps(document([entry(KD, 0.60)])))  # profile "smoke": 10 points allowed
    results.write_text(json.dumps(document([entry(KD, 0.52)])))
    assert main(["gate", "--baseline", str(baseline), str(results)]) == 0
    assert main(["gate", "--baseline", str(baseline), str(results), "--accuracy-points", "0.05"]) == 1
    assert "FAIL ds-mobilenet_v2-kd: accuracy 0.6000 -> 0.5200" in capsys.readouterr().out


def test_accuracies_get_the_cross_cpu_tolerance_only_when_the_cpu_model_differs():
    wide = Tolerances(accuracy_points=0.02, cross_cpu_accuracy_points=0.30)
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    other_node = {**MACHINE, "node": "ci-2"}
    assert not gate([entry(KD, 0.60)], [entry(KD, 0.45)], wide, machine=other_node).passed
    report = gate([entry(KD, 0.60)], [entry(KD, 0.45)], wide, machine=other_cpu)
    assert report.passed and "note baseline CPU Test CPU (x86_64) differs from this run's Other CPU" in report.render()
    collapsed = gate([entry(KD, 0.60)], [entry(KD, 0.10)], wide, machine=other_cpu)
    assert collapsed.failures == [f"{KD}: accuracy 0.6000 -> 0.1000 (-50.0 points, tolerance 30.0)"]


def test_one_brand_string_of_two_cpu_generations_is_two_cpus():
    """"AMD EPYC" names a Zen 3 without AVX-512 and a Zen 4 with it: their int8 kernels differ."""
    wide = Tolerances(accuracy_points=0.015, cross_cpu_accuracy_points=0.04)
    def epyc(model, flags):
        return {**MACHINE, "cpu": {"brand_raw": "AMD EPYC", "vendor_id_raw": "AuthenticAMD", "family": 25,
                                   "model": model, "stepping": 1, "count": 2, "flags": ["sse4_2", *flags]}}
    zen4, zen3 = epyc(17, ["avx512f", "avx512_vnni", "avx2"]), epyc(1, ["avx2"])
    assert not gate([entry(KD, 0.846)], [entry(KD, 0.826)], wide, baseline_machine=zen4, run_machine=zen4).passed
    report = gate([entry(KD, 0.846)], [entry(KD, 0.826)], wide, baseline_machine=zen4, run_machine=zen3)
    assert report.passed, report.render()
    assert ("baseline CPU AuthenticAMD family 25 model 17 stepping 1 (x86_64; avx512_vnni, avx512f) differs from this "
            "run's AuthenticAMD family 25 model 1 stepping 1 (x86_64; no avx512/amx/avx_vnni)") in report.render()


def test_a_profile_may_leave_absolute_times_ungated_but_still_gates_speedups():
    base = [entry(FT, 0.8, metrics={"latency": {"onnx_b1_ms": 2.0}, "int8_speedup": 2.0})]
    slower = [entry(FT, 0.8, metrics={"latency": {"onnx_b1_ms": 5.0}, "int8_speedup": 2.0})]
    report = gate(base, slower, Tolerances(gate_times=False))
    assert report.passed and report.warnings == [
        f"{FT}: latency.onnx_b1_ms 2 -> 5 (x2.50, tolerance 25%) [the profile does not gate absolute times]"]
    collapsed = [entry(FT, 0.8, metrics={"latency": {"onnx_b1_ms": 2.0}, "int8_speedup": 1.0})]
    assert not gate(base, collapsed, Tolerances(gate_times=False)).passed


def test_a_gate_that_compares_nothing_fails_unless_asked_to_allow_it(tmp_path, capsys):
    import json

    from mnv2core.cli import main
    # a baseline of other cases: nothing shared
    report = gate([entry(KD, 0.60)], [entry(FT, 0.80)])
    assert not report.passed and report.compared == 0
    assert report.failures[0].startswith("this run's cases share none with the baseline's: nothing was gated")
    # an empty baseline, and one without a gated metric
    assert not compare({"benchmarks": []}, document([entry(KD, 0.6)]), TOLERANCES).passed
    no_metrics = gate([entry(KD, metrics={"note": "x"})], [entry(KD, metrics={"note": "x"})])
    assert no_metrics.failures == ["no metric was compared: nothing was gated (--gate-allow-empty / --allow-empty if "
                                   "that is meant)"]
    # a baseline of another profile
    other = document([entry(KD, 0.60)])
    other["mnv2bench"]["profile"] = "cpu"
    assert "the baseline is of profile 'cpu', this run of 'smoke'" in compare(other, document([entry(KD, 0.6)]),
                                                                             TOLERANCES).failures[0]
    sliced = document([entry(FT, 0.80)])
    sliced["mnv2bench"]["selected"] = [FT]  # e.g. -k full_ft against a baseline without it
    assert not compare(document([entry(KD, 0.60)]), sliced, TOLERANCES).passed
    allowed = compare(document([entry(KD, 0.60)]), sliced, TOLERANCES, allow_empty=True)
    assert allowed.passed and "share none" in allowed.render()
    baseline, results = tmp_path / "base.json", tmp_path / "run.json"
    baseline.write_text(json.dumps({"benchmarks": []}))
    results.write_text(json.dumps(document([entry(KD, 0.6)])))
    assert main(["gate", "--baseline", str(baseline), str(results)]) == 1
    assert "nothing was gated" in capsys.readouterr().out
    assert main(["gate", "--baseline", str(baseline), str(results), "--allow-empty"]) == 0


def test_gate_on_a_custom_profile_points_at_its_file(tmp_path, capsys):
    import json

    from mnv2core.cli import main
    base = document([entry(KD, 0.60)])
    base["mnv2bench"]["profile"] = "tiny"
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "run.json").write_text(json.dumps(base))
    assert main(["gate", "--baseline", str(tmp_path / "base.json"), str(tmp_path / "run.json")]) == 2
    assert "unknown profile 'tiny'" in (err := capsys.readouterr().err) and "--profile PATH" in err
