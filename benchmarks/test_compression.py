"""Phase 2 of the study: compressing the full fine-tuned and the distilled models (iterative
and structured pruning, the lottery ticket, SVD low-rank classifier, spectra)."""


def test_compression(compressed_case, study, record_case):
    record = study.run_case(compressed_case)
    record_case(record)
    study.check(compressed_case, record)
