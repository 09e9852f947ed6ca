"""Phase 3 of the study: deploying and attacking the models (FX int8, ONNX Runtime, CPU
latency, FGSM, PGD, blur and noise, Grad-CAM). Each case measures its base model in this run."""


def test_deployment(deployed_case, study, latency_timer, record_case):
    record = study.run_case(deployed_case)
    record_case(record)
    study.check(deployed_case, record)
