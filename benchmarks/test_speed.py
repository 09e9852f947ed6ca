"""The harness's own speed: its training step and evaluation against a plain PyTorch eager
loop (NCHW fp32), back to back in one process, at each speed dataset's input size. Select
with ``pytest benchmarks -k speed``; the gate tracks the ratios."""


def test_speed(speed_case, study, record_case):
    record = study.run_case(speed_case)
    record_case(record)
    study.check(speed_case, record)
