"""Phase 1 of the study: partial and full fine-tuning, training from scratch, the teacher
and knowledge distillation, for every dataset of the profile."""


def test_training(case, study, record_case):
    record = study.run_case(case)
    record_case(record)
    metrics = record["metrics"]
    assert metrics["accuracy"] >= metrics["floor"], (
        f"{case.id}: test accuracy {metrics['accuracy']:.4f} is below the floor {metrics['floor']} "
        f"of profile {record['profile']!r}"
    )
