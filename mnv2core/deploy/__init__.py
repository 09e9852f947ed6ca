"""Deployment and security of trained models: FX int8 quantization, ONNX Runtime, CPU
latency, robustness to blur and noise, and the FGSM attack. Plain functions."""
