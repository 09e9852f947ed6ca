"""The companion studies, cases of the same grid: VGG16 with separation-index compression,
light digit classifiers against larger baselines, and ResNet-18's low-rank head."""


def test_companion(companion_case, study, latency_timer, record_case):
    record = study.run_case(companion_case)
    record_case(record)
    study.check(companion_case, record)
