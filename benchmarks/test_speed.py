"""The harness's own speed: its training step and evaluation against a plain PyTorch eager
loop (NCHW fp32), back to back in one process, at each speed dataset's input size. Select
with ``pytest benchmarks -k speed``; the gate tracks the ratios."""


def test_speed(speed_case, study, record_case):
    record = study.run_case(speed_case)
    record_case(record)
    m = record["metrics"]
    rates = m["images_per_second"]
    assert set(rates) == {f"{side}_{kind}_images_per_second" for side in ("reference", "harness")
                          for kind in ("train", "eval")}
    assert all(rate > 0 for rate in rates.values())
    floor = study.profile.studies["speed"]["min_train_speedup"]
    assert m["speedup"]["train_speedup"] >= floor, (
        f"{speed_case.id}: the harness trains at {m['speedup']['train_speedup']:.2f}x the plain loop, "
        f"below the profile's min_train_speedup {floor}")
