import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mnv2core.deploy import onnx_runtime
from mnv2core.deploy.bias_correction import InputMeans, output_shift
from mnv2core.deploy.int8_fx import quantize_fx
from mnv2core.deploy.onnx_runtime import (
    correct_biases,
    export_onnx,
    ort_int8_session,
    ort_logits,
    ort_session,
    quantize_onnx_static,
)


def test_output_shift_is_the_mean_change_of_a_linear_layers_output():
    torch.manual_seed(0)
    weight, error, x = torch.randn(5, 7), torch.randn(5, 7) * 0.1, torch.rand(100, 7) + 1
    change = (x @ (weight + error).T - x @ weight.T).mean(0)
    assert torch.allclose(output_shift(error, x.mean(0)), change, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 4])
def test_output_shift_of_a_conv_grouped_or_not(groups):
    """Inputs constant over space (what the shift assumes: padding is ignored)."""
    torch.manual_seed(0)
    weight, error = torch.randn(8, 8 // groups, 3, 3), torch.randn(8, 8 // groups, 3, 3) * 0.1
    x = (torch.rand(16, 8) + 1)[:, :, None, None].expand(16, 8, 6, 6)
    change = (F.conv2d(x, weight + error, groups=groups) - F.conv2d(x, weight, groups=groups)).mean((0, 2, 3))
    assert torch.allclose(output_shift(error, x.mean((0, 2, 3)), groups), change, atol=1e-4)
    with pytest.raises(ValueError, match="do not take"):
        output_shift(error, torch.ones(6), groups)


def test_input_means_are_each_channels_mean_over_every_pass():
    layer = nn.Conv2d(2, 1, 1)
    batches = [torch.rand(4, 2, 3, 3) for _ in range(3)]
    with InputMeans({"conv": layer}) as means:
        for batch in batches:
            layer(batch)
    layer(torch.full((1, 2, 3, 3), 100.0))  # after the block: not counted
    assert torch.allclose(means["conv"], torch.cat(batches).mean((0, 2, 3)))
    assert "conv" in means and "other" not in means


def coarse_model() -> nn.Module:
    """Every output channel of every layer has one outsized weight, so its other (positive)
    weights all round to 0 in int8 and, on positive inputs, every output's mean falls."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 1), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.weight.uniform_(0, 0.003).flatten(1)[:, 0] = 1.0
                layer.bias.zero_()
    return model


def mean_output_error(run, reference, batches) -> float:
    """The mean over outputs of |mean over images of the int8 minus the float output|."""
    with torch.no_grad():
        difference = torch.cat([run(x) - reference(x) for x in batches]).mean(0)
    return float(difference.abs().mean())


def test_fx_bias_correction_removes_the_mean_shift_of_rounded_weights():
    model = coarse_model()
    batches = [torch.rand(32, 3, 8, 8) for _ in range(4)]
    plain, corrected = (quantize_fx(model, batches, 8, bias_correction=on) for on in (False, True))
    before, after = (mean_output_error(m, model, batches) for m in (plain, corrected))
    assert after < before / 4, (before, after)


def test_ort_bias_correction_corrects_every_layer_and_removes_the_shift(tmp_path, monkeypatch):
    model = coarse_model()
    fp32 = export_onnx(model, 8, tmp_path / "model.onnx")
    batches = [torch.rand(32, 3, 8, 8) for _ in range(4)]
    plain = quantize_onnx_static(fp32, tmp_path / "plain.int8.onnx", batches, bias_correction=False)
    counts = []
    monkeypatch.setattr(onnx_runtime, "correct_biases", lambda *args: counts.append(correct_biases(*args)))
    corrected = quantize_onnx_static(fp32, tmp_path / "corrected.int8.onnx", batches)
    assert counts == [4]  # three convs (batch norms folded in) and the linear layer
    reference = ort_session(fp32)

    def error(path):
        session = ort_int8_session(path)
        return mean_output_error(lambda x: ort_logits(session, x), lambda x: ort_logits(reference, x), batches)

    before, after = error(plain), error(corrected)
    assert after < before / 4, (before, after)
