"""Library pieces of the companion studies: networks, VGG surgery, data, profiles, timing, report."""
import dataclasses

import pytest
import torch
from tiny import lr_at_each_step
from torch import nn

from mnv2core.compression.architecture import restore_model
from mnv2core.compression.lowrank import named_spectra
from mnv2core.datasets import load_dataset
from mnv2core.datasets.sources import read_mnist
from mnv2core.datasets.tensors import ImageSet
from mnv2core.deploy.latency import eager_latency
from mnv2core.errors import ConfigError, DataNotFoundError
from mnv2core.grid import build_grid
from mnv2core.models import MNIST_MEAN, MNIST_STD, ImageClassifier, build_model, count_parameters
from mnv2core.networks import compress_vgg, conv_outputs
from mnv2core.profiles import TrainConfig, load_profile
from mnv2core.techniques import catalogue
from mnv2core.training import make_schedule


@pytest.mark.parametrize("name, parameters", [
    ("lightcnn", 6218), ("mlp", 535818), ("lenet", 431080), ("ultralight", 210), ("mediumlight", 3058)])
def test_digit_models_have_the_reported_sizes(name, parameters):
    model = build_model(name, 10)
    assert count_parameters(model) == parameters
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 10)


def test_digit_models_see_normalised_grey_levels():
    model = build_model("lightcnn", 10).eval()
    grey = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(grey.expand(-1, 3, -1, -1)), model.net((grey - MNIST_MEAN) / MNIST_STD), atol=1e-6)


def test_vgg16_has_13_conv_layers_and_compresses_to_the_selected_filters():
    torch.manual_seed(0)
    vgg = build_model("vgg16", 10).eval()
    outputs = conv_outputs(vgg.net.features)
    assert len(outputs) == 13
    keep = [5, 1, 60]
    small = compress_vgg(vgg.net, 4, keep, hidden=6, num_classes=10).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = vgg.net.features[:outputs[3] + 1](x).mean((2, 3))[:, keep]
        assert torch.allclose(small.features(x).flatten(1), expected, atol=1e-5)
    compressed = ImageClassifier("vgg16", small)
    assert count_parameters(compressed) < count_parameters(vgg) / 20

    arch = {"vgg_cut": {"conv_layers": 4, "channels": 3, "hidden": 6}}
    restored = restore_model("vgg16", 10, compressed.state_dict(), arch).eval()
    with torch.no_grad():
        assert torch.equal(restored(x), compressed.eval()(x))


def test_stratified_split_holds_out_the_same_share_of_every_class():
    labels = torch.arange(100) % 4
    images = torch.zeros(100, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(100).to(torch.uint8)
    data = ImageSet(images, labels)
    rest, held = data.stratified_split(0.2, seed=3)
    assert len(held) == 20 and len(rest) == 80
    assert torch.bincount(held.labels).tolist() == [5, 5, 5, 5]
    assert not set(held.images[:, 0, 0, 0].tolist()) & set(rest.images[:, 0, 0, 0].tolist())
    again, _ = data.stratified_split(0.2, seed=3)
    assert torch.equal(again.images, rest.images)
    with pytest.raises(ValueError, match="fraction"):
        data.stratified_split(1.0, seed=0)


def test_step_schedule_divides_the_lr_every_step_epochs():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    cfg = TrainConfig(epochs=6, batch_size=1, optimizer="sgd", lr=0.1, schedule="step", step_epochs=2, gamma=0.5)
    rates = lr_at_each_step(optimizer, make_schedule(optimizer, cfg, total_steps=60, steps_per_epoch=10), 60)
    assert rates[0] == rates[19] == pytest.approx(0.1)
    assert rates[20] == pytest.approx(0.05) and rates[40] == pytest.approx(0.025)


STUDIES_PROFILE = """
[datasets.digits]
source = "digits"
native_size = 28
input_size = 28
train_size = 40
test_size = 20
studies = ["light"]
{extra}
[techniques.light_cnn]
epochs = 1
batch_size = 8
[techniques.resnet_head]
epochs = 1
batch_size = 8
size = 64
[models.resnet18]
weights = "none"
[floors.digits]
light_cnn = 0.0
"""


def test_datasets_run_only_their_studies_and_need_only_their_floors(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(STUDIES_PROFILE.format(extra="[studies.light]\nrounds = 7"))
    profile = load_profile(str(path), catalogue())
    assert [c.id for c in build_grid(profile, catalogue())] == ["digits-lightcnn-light_cnn"]
    assert profile.studies == {"light": {"batch_sizes": [1, 64], "warmup": 5, "rounds": 7, "threads": 1}}
    config = profile.datasets["digits"]
    assert config.size_for(profile.train_config("resnet_head", "digits")) == 64
    assert config.size_for(profile.train_config("light_cnn", "digits")) == 28


@pytest.mark.parametrize("extra, message", [
    ("[studies.vision]\nrounds = 1", "unknown study 'vision'"),
    ("[studies.light]\nround = 1", "unknown key"),
])
def test_bad_study_tables_are_named(tmp_path, extra, message):
    path = tmp_path / "p.toml"
    path.write_text(STUDIES_PROFILE.format(extra=extra))
    with pytest.raises(ConfigError, match=message):
        load_profile(str(path), catalogue())


def test_unknown_study_of_a_dataset_is_named(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(STUDIES_PROFILE.format(extra="").replace('studies = ["light"]', 'studies = ["lite"]'))
    with pytest.raises(ConfigError, match="studies is 'lite'"):
        load_profile(str(path), catalogue())


def test_missing_mnist_names_the_files_and_the_fixes(tmp_path):
    with pytest.raises(DataNotFoundError, match="MNIST not found.*train-images-idx3-ubyte.*--download.*mnist=imagefolder"):
        read_mnist(tmp_path, download=False)


def test_synthetic_digits_load_as_a_stand_in(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(STUDIES_PROFILE.format(extra=""))
    config = load_profile(str(path), catalogue()).datasets["digits"]
    splits = load_dataset(config, data_root=tmp_path, download=False, seed=0)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (40, 20, 10)
    assert splits.provenance["stand_in"] and "MNIST" in splits.provenance["note"]


def test_named_spectra_of_a_known_matrix_and_a_missing_layer():
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.1])))
    (spectrum,) = named_spectra(nn.Sequential(layer), ["0"], energy=0.95)
    assert spectrum["k95"] == 2 and spectrum["k95_fraction"] == 0.5  # 9 / 10.26 < 0.95 <= 10 / 10.26
    with pytest.raises(ConfigError, match="no layer"):
        named_spectra(nn.Sequential(layer), ["fc"])


def test_eager_latency_times_every_model_at_every_batch_with_the_given_timer():
    timed = []

    def timer(runs, warmup, rounds):
        for run in runs.values():
            run()
        timed.append(list(runs))
        return {name: {"median_ms": 2.0, "iqr_ms": 0.5, "min_ms": 1.5, "rounds": rounds, "cpu_share": 1.0}
                for name in runs}

    models = {"dense": nn.Flatten(), "keep50": nn.Flatten()}
    result = eager_latency(models, 8, [1, 4], warmup=1, rounds=3, threads=1, timer=timer)
    assert timed == [["dense_b1", "keep50_b1"], ["dense_b4", "keep50_b4"]]  # a batch size's models together
    names = [name for batch in timed for name in batch]
    assert result["latency"] == {f"{n}_ms": 2.0 for n in names}
    assert result["latency_iqr"] == {f"{n}_iqr": 0.5 for n in names}


def test_companion_tables_and_the_lowrank_note_come_from_their_techniques():
    from results_factory import document, entry

    from mnv2core.report import render_report
    light = entry("mnist-lightcnn-light_cnn", 0.9861, method="light_cnn", metrics={
        "parameters": 6218, "latency": {"eager_fp32_b1_ms": 0.2, "eager_fp32_b64_ms": 5.0}})
    lowrank = entry("c10-resnet18-resnet_lowrank", 0.8, method="resnet_lowrank", metrics={
        "dense_accuracy": 0.81, "head_shape": [10, 512], "head_params_before": 5130,
        "params_before": 11181642, "batch_size": 64,
        "variants": [{"keep": 0.5, "rank": 5, "head_params": 2620, "params": 11179132,
                      "accuracy_before_recovery": 0.7, "accuracy": 0.8}],
        "latency": {"dense_b64_ms": 200.0, "keep50_b64_ms": 199.0},
        "spectra": [{"layer": "fc", "shape": [10, 512], "k95": 9, "k95_fraction": 0.9}]})
    text = render_report(document([light, lowrank]))
    mnist, c10 = text.split("\nc10\n")
    assert "Light models on digits" in mnist and "cnn      6,218     0.9861      0.200              5.000" in mnist
    assert "ResNet-18 low-rank fc" in c10 and "200.0" in c10 and "199.0" in c10 and "Light models" not in c10
    assert "5,130 of 11,181,642 parameters (0.05%)" in c10 and "from 200.0 to 199.0 ms" in c10


def test_train_config_rejects_a_bad_step_schedule():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="step_epochs"):  # a recipe is checked whenever it is made
        dataclasses.replace(TrainConfig(epochs=1, batch_size=1), step_epochs=0)


def test_vgg_lr_search_names_each_trials_schedule_and_steps_only_where_the_lr_steps():
    from results_factory import document, entry

    from mnv2core.report import render_report
    from mnv2core.techniques.vgg_si import lr_steps_to_search, schedule_label
    onecycle = TrainConfig(epochs=2, batch_size=1, schedule="onecycle", step_epochs=3)
    step = dataclasses.replace(onecycle, schedule="step", step_epochs=2, gamma=0.5)
    assert [schedule_label(c) for c in (onecycle, step, dataclasses.replace(step, step_epochs=1))] == [
        "one cycle", "lr x0.5 every 2 epochs", "lr x0.5 every 1 epoch"]
    assert lr_steps_to_search({"step_candidates": []}, onecycle) == [3]
    assert lr_steps_to_search({"step_candidates": [1, 4]}, step) == [1, 4]
    with pytest.raises(ConfigError, match=r"step_candidates = \[1, 4\] needs .*schedule = \"step\" \(it is 'onecycle'\)"):
        lr_steps_to_search({"step_candidates": [1, 4]}, onecycle)

    trials = [{"lr": lr, "step_epochs": 3, "schedule": "one cycle", "epochs": 1, "val_accuracy": acc, "history": []}
              for lr, acc in ((0.01, 0.17), (0.05, 0.23))]
    vgg = entry("c10-vgg16-vgg_train", 0.35, method="vgg_train", metrics={
        "lr_search": trials, "chosen_lr": 0.05, "chosen_step_epochs": 3, "parameters": 15_250_000})
    table = render_report(document([vgg]), "md").split("learning-rate search")[1]
    assert "| 0.05 | one cycle  | 1               | 0.230     | *        |" in table
    assert "| 0.01 | one cycle  | 1               | 0.170     |          |" in table and "step" not in table
