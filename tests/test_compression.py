import copy

import pytest
import torch
from torch import nn

from mnv2core.compression.architecture import apply_architecture
from mnv2core.compression.channels import count_macs, prune_last_conv_channels, state_dict_bytes
from mnv2core.compression.lowrank import energy_rank, factorize_linear, layer_spectra, ratio_rank
from mnv2core.compression.plots import plot_cumulative_energy
from mnv2core.compression.unstructured import (
    apply_masks,
    empty_output_channels,
    layer_sparsity,
    make_permanent,
    masks_of,
    measured_sparsity,
    prunable_layers,
    prune_magnitude,
    rewind,
)
from mnv2core.errors import ConfigError
from mnv2core.models import build_model, count_parameters


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("mobilenet_v2", 10)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_three_rounds_of_20_percent_leave_0_8_cubed(model, memory_format):
    for _ in range(3):
        prune_magnitude(model, 0.2)
        model.to(memory_format=memory_format)  # as retraining leaves it
        with torch.no_grad():  # training between rounds moves the surviving weights
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 1e-3)
            model(torch.rand(2, 3, 32, 32))
    make_permanent(model)
    assert measured_sparsity(model) == pytest.approx(1 - 0.8 ** 3, abs=0.005)
    assert not any(name.endswith("_orig") for name in model.state_dict())


def test_held_masks_survive_training_steps(model):
    masks = {name: torch.rand_like(m.weight) > 0.5 for name, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))}
    apply_masks(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        model(torch.rand(4, 3, 32, 32)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    make_permanent(model)
    kept = masks_of(model)
    assert all(not kept[name][~mask].any() for name, mask in masks.items())


def test_rewind_restores_the_saved_init_exactly_on_surviving_weights(model):
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3).add_(1)  # "training"
    prune_magnitude(model, 0.5)
    make_permanent(model)
    masks = masks_of(model)

    ticket = build_model("mobilenet_v2", 10)
    rewind(ticket, start, masks)
    make_permanent(ticket)
    for name, module in ticket.named_modules():
        if name in masks:
            weight, initial, mask = module.weight, start[f"{name}.weight"], masks[name]
            assert torch.equal(weight[mask], initial[mask]) and not weight[~mask].any()


def test_structured_pruning_shrinks_the_last_conv_and_classifier(model):
    model.eval()
    pruned, _ = prune_last_conv_channels(model, 0.4)
    conv, bn = pruned.net.features[18][0], pruned.net.features[18][1]
    assert conv.weight.shape == (768, 320, 1, 1) and bn.num_features == 768
    assert pruned.head.weight.shape == (10, 768)
    assert count_parameters(model) - count_parameters(pruned) == 512 * 320 + 512 * 2 + 512 * 10
    assert pruned(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(pruned, 32) < count_macs(model, 32)
    assert state_dict_bytes(pruned) < state_dict_bytes(model)


def test_structured_pruning_keeps_the_most_important_channels(model):
    conv = model.net.features[18][0]
    with torch.no_grad():
        conv.weight.mul_(0.01)
        conv.weight[:5].fill_(1.0)  # five clearly important channels
    pruned, _ = prune_last_conv_channels(model, 0.99)
    assert pruned.net.features[18][0].out_channels == 13
    assert torch.equal(pruned.net.features[18][0].weight[:5], conv.weight[:5])


def test_a_pruned_state_dict_loads_into_a_resized_model(model):
    pruned, record = prune_last_conv_channels(model, 0.4)
    fresh = build_model("mobilenet_v2", 10)
    apply_architecture(fresh, {"pruned_channels": record})
    fresh.load_state_dict(pruned.state_dict())
    with pytest.raises(ConfigError, match="ratio"):
        prune_last_conv_channels(model, 1.0)


def test_svd_at_full_rank_reproduces_the_layer():
    torch.manual_seed(0)
    linear = nn.Linear(1280, 10)
    low_rank = factorize_linear(linear, 10)
    inputs = torch.randn(16, 1280)
    assert torch.allclose(low_rank(inputs), linear(inputs), atol=1e-5)
    assert sum(p.numel() for p in low_rank.parameters()) == 10 * 1290 + 10


def test_truncated_svd_is_the_best_low_rank_approximation():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    singular = torch.linalg.svdvals(linear.weight.detach())
    low_rank = factorize_linear(linear, 8)
    product = low_rank[1].weight @ low_rank[0].weight
    error = float(torch.linalg.matrix_norm(product - linear.weight).detach())
    assert error == pytest.approx(float(singular[8:].pow(2).sum().sqrt()), rel=1e-4)
    assert ratio_rank(linear, 0.5) == 16 and ratio_rank(linear, 0.2) == 6


def test_energy_rank_counts_components():
    values = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1: 9/14=0.64, 13/14=0.93, 1.0
    assert energy_rank(values, 0.95) == 3
    assert energy_rank(values, 0.9) == 2
    assert energy_rank(values, 0.5) == 1


def test_the_spectra_check_accepts_k95_at_the_boundary_and_rejects_a_wrong_one():
    from mnv2core.registry import CheckFailed
    from mnv2core.techniques.lowrank import check_spectra

    def metrics(below, at):
        return {"energy": 0.95, "plot": __file__, "singular_values_file": __file__,
                "spectra": [{"layer": "conv", "k95": 13, "energy_below_k95": below, "energy_at_k95": at}]}

    # a Lite0 pointwise conv fine-tuned on CIFAR-10: its first 12 of 16 components hold
    # 0.9499991, 9e-7 below 0.95; the float32 values the record keeps may also put them a hair above
    check_spectra(metrics(0.9499990683922098, 0.9674392756841017), None)
    check_spectra(metrics(0.9500002, 0.953), None)
    with pytest.raises(CheckFailed, match="not the fewest"):
        check_spectra(metrics(0.951, 0.953), None)  # k95 - 1 components already hold it
    with pytest.raises(CheckFailed, match="not the fewest"):
        check_spectra(metrics(0.93, 0.94), None)  # k95 components do not


def test_spectra_cover_every_layer_and_plot(model, tmp_path):
    spectra = layer_spectra(model)
    layers = [s["layer"] for s in spectra]
    assert len(layers) == 53 and layers[-1] == "net.classifier.1"
    head = spectra[-1]
    assert head["shape"] == [10, 1280] and head["rank"] == 10 and 1 <= head["k95"] <= 10
    assert head["k95_fraction"] == head["k95"] / 10
    path = plot_cumulative_energy(spectra, tmp_path / "spectra.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_channel_pruned_model_still_exports_to_onnx(model):
    import io

    import onnxruntime
    pruned = prune_last_conv_channels(model, 0.4)[0].eval()
    images = torch.rand(2, 3, 32, 32)
    exported = io.BytesIO()
    torch.onnx.export(pruned, (images,), exported, dynamo=False, input_names=["images"])
    session = onnxruntime.InferenceSession(exported.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    assert logits.shape == (2, 10)
    assert torch.allclose(torch.from_numpy(logits), pruned(images), atol=1e-4)


@pytest.mark.parametrize("scope", ["layer", "normalized"])
def test_every_scope_compounds_to_the_same_overall_sparsity(model, scope):
    for _ in range(3):
        prune_magnitude(model, 0.2, scope)
    make_permanent(model)
    assert measured_sparsity(model) == pytest.approx(1 - 0.8 ** 3, abs=0.005)
    if scope == "layer":
        big = {name: s for name, s in layer_sparsity(model).items() if prunable_layers(model)[name].weight.numel() > 1000}
        assert all(s == pytest.approx(1 - 0.8 ** 3, abs=0.01) for s in big.values()), big


def test_a_layer_of_small_weights_is_emptied_by_global_ranking_but_kept_by_layer_and_normalized(model):
    with torch.no_grad():
        model.head.weight.mul_(1e-4)  # a layer on a smaller scale than the rest
    sparsity, dead = {}, {}
    for scope in ("global", "layer", "normalized"):
        pruned = copy.deepcopy(model)
        prune_magnitude(pruned, 0.5, scope)
        make_permanent(pruned)
        sparsity[scope], dead[scope] = layer_sparsity(pruned)["net.classifier.1"], empty_output_channels(pruned)
    assert sparsity["global"] == 1.0 and dead["global"] >= 10  # all 10 classifier rows died
    assert sparsity["layer"] == pytest.approx(0.5, abs=0.01) and sparsity["normalized"] < 0.9


def test_unknown_scope_is_named(model):
    with pytest.raises(ConfigError, match="pruning scope 'local'"):
        prune_magnitude(model, 0.2, "local")


def test_skipping_depthwise_convs_leaves_them_dense_and_counts_sparsity_over_the_rest(model):
    prune_magnitude(model, 0.5, "layer", skip_depthwise=True)
    make_permanent(model)
    depthwise = [name for name, m in prunable_layers(model).items() if name not in prunable_layers(model, True)]
    assert len(depthwise) == 17 and all(layer_sparsity(model)[name] == 0 for name in depthwise)
    assert measured_sparsity(model, skip_depthwise=True) == pytest.approx(0.5, abs=0.005)
    assert measured_sparsity(model) < 0.5
