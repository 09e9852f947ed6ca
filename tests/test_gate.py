import pytest
from results_factory import MACHINE, document, entry

from mnv2core import gate as gating
from mnv2core.gate import Tolerances
from mnv2core.techniques import catalogue

TOLERANCES = Tolerances(accuracy_points=0.02, speedup_ratio=0.10, time_ratio=0.25)
KD, FT = "ds-mobilenet_v2-kd", "ds-mobilenet_v2-full_ft"
LAT, INT8 = "ds-mobilenet_v2-full_ft_latency", "ds-mobilenet_v2-full_ft_int8"


def timed(ms, speedup=2.0):
    """A latency case: its eager fp32 time and FX int8 speed-up at batch 1."""
    return entry(LAT, metrics={"latency": {"eager_fp32_b1_ms": ms}, "speedup": {"fx_int8_b1_speedup": speedup}},
                 method="latency", base="full_ft", derived="latency")


def int8(accuracy, drop):
    return entry(INT8, accuracy, metrics={"fp32_accuracy": accuracy + drop, "int8_drop": drop, "max_drop": 0.1},
                 method="int8", base="full_ft", derived="int8")


def compare(baseline, results, tolerances, allow_empty=False):
    return gating.compare(baseline, results, tolerances, catalogue().declarations, allow_empty)


def gated_metrics(extra):
    return gating.gated_metrics(extra, catalogue().declarations)


def gate(baseline_entries, result_entries, tolerances=TOLERANCES, machine=None, baseline_machine=None, run_machine=None):
    return compare(document(baseline_entries, machine=baseline_machine),
                   document(result_entries, machine=run_machine or machine), tolerances)


def test_within_tolerance_and_improvements_pass():
    report = gate([entry(KD, 0.60), entry(FT, 0.80)], [entry(KD, 0.585), entry(FT, 0.95)])
    assert report.passed and report.compared == 2 and report.improved == 1
    assert "PASSED" in report.render()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["results", "baseline"])
def test_a_metric_that_is_not_a_finite_number_fails_naming_the_case(bad, where):
    """NaN compares false both ways: without its own check it would pass every tolerance."""
    good, broken = [entry(KD, 0.60), entry(FT, 0.80)], [entry(KD, 0.60), entry(FT, bad)]
    report = gate(good, broken) if where == "results" else gate(broken, good)
    assert not report.passed and report.failures == [
        f"{FT}: metric accuracy is not a finite number ({where} {bad})"]
    assert report.compared == 1  # the other case is compared as usual


def test_an_accuracy_drop_beyond_tolerance_fails_with_a_readable_line():
    report = gate([entry(KD, 0.60), entry(FT, 0.80)], [entry(KD, 0.50), entry(FT, 0.80)])
    assert not report.passed
    assert report.failures == [f"{KD}: accuracy 0.6000 -> 0.5000 (-10.0 points, tolerance 2.0)"]


def test_a_missing_case_or_metric_fails():
    report = gate([entry(KD, 0.60), int8(0.79, 0.01)],
                  [entry(KD, outcome="failed", error="DataNotFoundError"),
                   entry(INT8, 0.79, metrics={"fp32_accuracy": 0.8}, method="int8", base="full_ft")])
    assert len(report.failures) == 2
    assert report.failures[0].startswith(f"{KD}: missing (failed without metrics)")
    assert report.failures[1] == f"{INT8}: metric int8_drop is missing from the results"
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
    same = gate([timed(2.0)], [timed(3.0)])
    assert same.failures == [f"{LAT}: latency.eager_fp32_b1_ms 2 -> 3 (x1.50, tolerance 25%)"]
    other = gate([timed(2.0)], [timed(3.0)], machine={**MACHINE, "node": "laptop"})
    assert other.passed and "different machine" in other.warnings[0]


def test_a_speedup_ratio_is_gated_on_any_machine():
    report = gate([timed(2.0, 2.0)], [timed(2.0, 1.5)], machine={**MACHINE, "node": "x"})
    assert not report.passed and "speedup.fx_int8_b1_speedup" in report.failures[0]


def test_a_speedup_ratio_only_warns_between_cpus_with_and_without_an_int8_dot_product():
    """ORT int8 runs fast kernels where the CPU has VNNI or AMX and exact ones elsewhere: its
    speed-up on one says nothing of the other; between two CPUs of one kind it is gated."""
    def cpu(*flags):
        return {**MACHINE, "cpu": {**MACHINE["cpu"], "family": 25, "model": 1, "flags": ["avx2", *flags]}}
    across = gate([timed(2.0, 2.0)], [timed(2.0, 1.5)], baseline_machine=cpu("avx512_vnni"), run_machine=cpu())
    assert across.passed and "speed-ups are not gated" in across.warnings[0]
    assert "int8 dot product" in " ".join(across.notes)
    alike = gate([timed(2.0, 2.0)], [timed(2.0, 1.5)], baseline_machine=cpu("avx512_vnni"),
                 run_machine=cpu("avx512_vnni", "amx_int8"))
    assert not alike.passed and "speedup.fx_int8_b1_speedup" in alike.failures[0]


def test_what_is_gated_and_which_way_comes_from_the_declarations_not_the_names():
    assert set(gated_metrics(int8(0.7, 0.05)["records"][0])) == {"accuracy", "int8_drop"}  # not fp32_accuracy
    structured = {"method": "structured", "metrics": {"accuracy": 0.7, "dense_accuracy": 0.8,
                                                      "accuracy_before_retrain": 0.5, "params_after": 9}}
    assert set(gated_metrics(structured)) == {"accuracy", "accuracy_before_retrain"}  # dense: the base's, not its own
    # int8_drop: lower is better, in accuracy points
    assert gate([int8(0.70, 0.01)], [int8(0.72, 0.0)]).passed
    assert gate([int8(0.70, 0.01)], [int8(0.69, 0.04)]).failures == [
        f"{INT8}: int8_drop 0.0100 -> 0.0400 (+3.0 points, tolerance 2.0)"]
    # a baseline case of a technique this code does not have cannot be judged: it says so
    gone = entry(FT, 0.8, method="sharpen")
    assert "unknown technique 'sharpen'" in gate([gone, entry(KD, 0.6)], [entry(KD, 0.6)]).failures[0]


def test_cli_gate_uses_the_baseline_profile_tolerance_and_exits_1_on_regression(tmp_path, capsys):
    import json

    from mnv2core.cli import main
    baseline, results = tmp_path / "base.json", tmp_path / "run.json"
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    baseline.write_text(json.dumps(document([entry(KD, 0.60)])))  # profile "smoke"
    results.write_text(json.dumps(document([entry(KD, 0.52)])))
    assert main(["gate", "--baseline", str(baseline), str(results)]) == 1  # same CPU: half a point
    assert "FAIL ds-mobilenet_v2-kd: accuracy 0.6000 -> 0.5200 (-8.0 points, tolerance 0.5)" in capsys.readouterr().out
    results.write_text(json.dumps(document([entry(KD, 0.52)], machine=other_cpu)))
    assert main(["gate", "--baseline", str(baseline), str(results)]) == 0  # another CPU: 30 points
    assert main(["gate", "--baseline", str(baseline), str(results), "--accuracy-points", "0.05"]) == 1
    assert "FAIL ds-mobilenet_v2-kd: accuracy 0.6000 -> 0.5200 (-8.0 points, tolerance 5.0)" in capsys.readouterr().out


def test_accuracies_get_the_cross_cpu_tolerance_only_when_the_cpu_model_differs():
    wide = Tolerances(accuracy_points=0.02, cross_cpu_accuracy_points=0.30)
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    other_node = {**MACHINE, "node": "ci-2"}
    assert not gate([entry(KD, 0.60)], [entry(KD, 0.45)], wide, machine=other_node).passed
    report = gate([entry(KD, 0.60)], [entry(KD, 0.45)], wide, machine=other_cpu)
    assert report.passed and ("note this run's CPU Other CPU (x86_64) is not one the baseline was verified on (Test "
                              "CPU (x86_64))") in report.render()
    collapsed = gate([entry(KD, 0.60)], [entry(KD, 0.10)], wide, machine=other_cpu)
    assert collapsed.failures == [f"{KD}: accuracy 0.6000 -> 0.1000 (-50.0 points, tolerance 30.0)"]


def test_the_gate_names_the_ops_whose_kernels_compute_other_bits_than_the_baselines():
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    probe = {"linear": "aa", "depthwise_32px": "bb", "batch_norm": "cc"}

    def notes(theirs, ours, machine=None):
        baseline, results = document([entry(KD, 0.60)]), document([entry(KD, 0.60)], machine=machine)
        baseline["mnv2bench"]["kernel_probe"], results["mnv2bench"]["kernel_probe"] = theirs, ours
        return [n for n in compare(baseline, results, TOLERANCES).notes if n.startswith("kernel probe")]

    drifted = {**probe, "depthwise_32px": "b0", "batch_norm": "c0", "new_op": "dd"}
    assert notes(probe, drifted, other_cpu) == ["kernel probe: 2 of 3 ops compute other bits than the baseline's "
                                                "run did (depthwise_32px, batch_norm): training drifts from there"]
    assert notes(probe, probe, other_cpu) == ["kernel probe: all 3 ops compute the bits they did on the "
                                              "baseline's CPU"]
    assert notes(probe, probe) == [] and notes({}, probe, other_cpu) == []  # same CPU; an older baseline


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
    assert ("this run's CPU AuthenticAMD family 25 model 1 stepping 1 (x86_64; no avx512/amx/avx_vnni) is not one the "
            "baseline was verified on (AuthenticAMD family 25 model 17 stepping 1 (x86_64; avx512_vnni, avx512f))"
            ) in report.render()


def test_a_profile_may_leave_absolute_times_ungated_but_still_gates_speedups():
    report = gate([timed(2.0)], [timed(5.0)], Tolerances(gate_times=False))
    assert report.passed and report.warnings == [
        f"{LAT}: latency.eager_fp32_b1_ms 2 -> 5 (x2.50, tolerance 25%) [the profile does not gate absolute times]"]
    assert not gate([timed(2.0, 2.0)], [timed(2.0, 1.0)], Tolerances(gate_times=False)).passed


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


def sampled(case, accuracy, images):
    return entry(case, accuracy, metrics={"images": images})


def test_across_cpus_an_accuracys_tolerance_grows_with_its_standard_error():
    narrow = Tolerances(accuracy_points=0.005, cross_cpu_accuracy_points=0.01, standard_errors=3.0)
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    few = gate([sampled(KD, 0.60, 200)], [sampled(KD, 0.50, 200)], narrow, run_machine=other_cpu)
    assert few.passed, few.render()  # 3 standard errors over 200 images: 10.4 points
    many = gate([sampled(KD, 0.60, 10000)], [sampled(KD, 0.57, 10000)], narrow, run_machine=other_cpu)
    assert many.failures == [f"{KD}: accuracy 0.6000 -> 0.5700 (-3.0 points, tolerance 1.5)"]
    same = gate([sampled(KD, 0.60, 200)], [sampled(KD, 0.59, 200)], narrow)
    assert same.failures == [f"{KD}: accuracy 0.6000 -> 0.5900 (-1.0 points, tolerance 0.5)"]  # about 0 on one CPU


def test_across_cpus_a_negative_int8_drop_is_judged_at_the_widest_standard_error():
    """int8 may beat fp32 (a drop below 0): no accuracy to take a binomial error of, so p = 0.5."""
    narrow = Tolerances(accuracy_points=0.005, cross_cpu_accuracy_points=0.01, standard_errors=3.0)
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}

    def dropped(drop):
        return entry(INT8, 0.60, method="int8", base="full_ft", derived="int8",
                     metrics={"images": 400, "fp32_accuracy": 0.60 + drop, "int8_drop": drop, "max_drop": 0.1})
    near = gate([dropped(-0.01)], [dropped(0.05)], narrow, run_machine=other_cpu)
    assert near.passed, near.render()  # 3 x sqrt(0.25 / 400): 7.5 points
    far = gate([dropped(-0.01)], [dropped(0.08)], narrow, run_machine=other_cpu)
    assert far.failures == [f"{INT8}: int8_drop -0.0100 -> 0.0800 (+9.0 points, tolerance 7.5)"]


def test_absolute_times_taken_under_load_only_warn_and_their_speed_ups_stay_gated():
    def loaded(ms, speedup, runs):
        case = timed(ms, speedup)
        case["records"][0]["metrics"]["under_load"] = runs
        return case
    slower = gate([timed(4.0)], [loaded(8.0, 2.0, ["eager_fp32_b1"])], machine=MACHINE)
    assert slower.passed and slower.warnings == [
        f"{LAT}: latency.eager_fp32_b1_ms 4 -> 8 (x2.00, tolerance 25%) [timed under load: other processes took "
        "turns on its cores]"]
    assert not gate([timed(4.0)], [loaded(4.0, 1.0, ["eager_fp32_b1"])], machine=MACHINE).passed
    assert not gate([timed(4.0)], [timed(8.0)], machine=MACHINE).passed  # not under load: gated


def test_an_accuracy_over_a_few_dozen_images_is_reported_not_gated():
    report = gate([sampled(KD, 0.60, 32), sampled(FT, 0.80, 512)], [sampled(KD, 0.40, 32), sampled(FT, 0.80, 512)])
    assert report.passed and report.compared == 1
    assert report.warnings == [f"{KD}: accuracy 0.6000 -> 0.4000 [over 32 images, fewer than 100: reported, not gated]"]


def test_a_cpu_that_reproduced_the_baseline_is_gated_as_its_own_and_verify_adds_it(tmp_path):
    import json

    from mnv2core.cli import main
    from mnv2core.errors import ConfigError
    wide = Tolerances(accuracy_points=0.005, cross_cpu_accuracy_points=0.30)
    other_cpu = {**MACHINE, "cpu": {"brand_raw": "Other CPU", "count": 2}}
    baseline = document([entry(KD, 0.60), entry(FT, 0.80)])
    identical = document([entry(KD, 0.60), entry(FT, 0.80)], machine=other_cpu)
    report = compare(baseline, identical, wide)
    assert "2 of 2 gated accuracies are identical to the baseline's: this CPU reproduces it" in report.render()
    assert gating.verify(baseline, identical, report) == "Other CPU (x86_64)"
    assert gating.verified_cpus(baseline) == ["Test CPU (x86_64)", "Other CPU (x86_64)"]
    regressed = compare(baseline, document([entry(KD, 0.55), entry(FT, 0.80)], machine=other_cpu), wide)
    assert regressed.failures == [f"{KD}: accuracy 0.6000 -> 0.5500 (-5.0 points, tolerance 0.5)"]
    differing = document([entry(KD, 0.61), entry(FT, 0.80)], machine={**MACHINE, "cpu": {"brand_raw": "Third"}})
    with pytest.raises(ConfigError, match="not verified: 1 of 2 gated accuracies are identical"):
        gating.verify(baseline, differing, compare(baseline, differing, wide))
    base_file, run_file = tmp_path / "base.json", tmp_path / "run.json"
    base_file.write_text(json.dumps(document([entry(KD, 0.60)])))
    run_file.write_text(json.dumps(document([entry(KD, 0.60)], machine=other_cpu)))
    assert main(["gate", "--baseline", str(base_file), str(run_file), "--verify"]) == 0
    assert json.loads(base_file.read_text())["mnv2bench"]["verified_cpus"] == ["Other CPU (x86_64)"]
