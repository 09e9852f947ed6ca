"""Phase 1 of the study: partial and full fine-tuning, training from scratch, the teacher
and knowledge distillation, for every dataset of the profile."""


def test_training(case, study, record_case):
    record = study.run_case(case)
    record_case(record)
    study.check(case, record)
