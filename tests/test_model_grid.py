"""The model axis of profiles and the grid: [models.NAME], a dataset's models, per-model
floors, distillation's teacher and student, ready-trained models, your own image folder."""
import pytest
from PIL import Image

from mnv2core.datasets import add_image_folder
from mnv2core.errors import ConfigError
from mnv2core.grid import build_grid, plan, upstream_of
from mnv2core.profiles import load_profile
from mnv2core.techniques import catalogue

PROFILE = """
[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32
models = ["mobilenet_v2", "effnet"]

[datasets.big]
source = "synthetic"
native_size = 96
input_size = 96
train_size = 64
test_size = 32
compress = false

[datasets.big.overrides.kd]
teacher = "effnet"

[models.mobilenet_v2]
weights = "pretext"
[models.effnet]
source = "timm"
arch = "test_efficientnet"
weights = "pretext"
{extra_models}

[pretext]
train_size = 64
epochs = 1
batch_size = 16

[techniques.partial_ft]
epochs = 1
batch_size = 16
[techniques.full_ft]
epochs = 1
batch_size = 16
[techniques.teacher]
epochs = 1
batch_size = 16
[techniques.scratch]
epochs = 1
batch_size = 16
[techniques.kd]
epochs = 1
batch_size = 16
teacher = "resnet50"
{extra_techniques}

[compression]
bases = ["full_ft"{extra_bases}]
[compression.structured]
epochs = 1

[deployment]
bases = ["full_ft"]
[deployment.onnx]

[floors.tiny]
partial_ft = 0.1
full_ft = 0.1
teacher = 0.1
scratch = 0.1
kd = 0.1
full_ft_structured = 0.1
{extra_floors}
[floors.tiny.effnet]
full_ft = 0.2

[floors.big]
partial_ft = 0.1
full_ft = 0.1
teacher = 0.1
scratch = 0.1
kd = 0.1
"""


def write(tmp_path, **extra):
    values = {"extra_models": "", "extra_techniques": "", "extra_bases": "", "extra_floors": "", **extra}
    path = tmp_path / "models.toml"
    path.write_text(PROFILE.format(**values))
    return str(path)


def ids(profile, dataset):
    return [c.id for c in build_grid(profile, catalogue(), [dataset])]


def test_every_technique_runs_on_each_model_of_the_dataset(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    tiny = ids(profile, "tiny")
    for model in ("mobilenet_v2", "effnet"):
        for technique in ("partial_ft", "full_ft", "full_ft_structured", "full_ft_onnx"):
            assert f"tiny-{model}-{technique}" in tiny
    # the study's distillation pair is not per model: one teacher, one student and its control
    assert [i for i in tiny if i.endswith(("-teacher", "-scratch", "-kd"))] == [
        "tiny-resnet50-teacher", "tiny-mobilenet_v2-scratch", "tiny-mobilenet_v2-kd"]
    assert "big-mobilenet_v2-full_ft" in ids(profile, "big") and "big-effnet-full_ft" not in ids(profile, "big")


def test_floors_per_model_before_the_datasets(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    assert profile.floor("tiny", "full_ft", "effnet") == 0.2
    assert profile.floor("tiny", "full_ft", "mobilenet_v2") == 0.1
    assert profile.floor("tiny", "full_ft_onnx", "effnet") is None


def test_kd_names_its_teacher_per_dataset(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    templates = plan(profile, catalogue())
    assert "big-effnet-teacher" in templates and "tiny-resnet50-teacher" in templates
    kd = templates["big-mobilenet_v2-kd"]
    assert upstream_of(kd, templates, catalogue()) == ["big-effnet-teacher"]
    full = templates["tiny-effnet-full_ft"]
    assert upstream_of(full, templates, catalogue()) == ["tiny-effnet-partial_ft"]


def test_a_ready_trained_model_is_a_base_without_training(tmp_path):
    extra = dict(extra_models='[models.resnet20]\nsource = "builtin"\narch = "cifar_resnet20"\n'
                              'weights = "r20.pth"\ntrained = true',
                 extra_techniques="[techniques.ready]\nepochs = 0\nbatch_size = 16\ninput = \"native\"",
                 extra_bases=', "ready"', extra_floors="ready = 0.5\nready_structured = 0.4")
    path = write(tmp_path, **extra)
    text = open(path).read().replace('models = ["mobilenet_v2", "effnet"]', 'models = ["mobilenet_v2", "effnet", "resnet20"]')
    open(path, "w").write(text)
    profile = load_profile(path, catalogue())
    tiny = ids(profile, "tiny")
    assert "tiny-resnet20-ready" in tiny and "tiny-resnet20-ready_structured" in tiny
    assert "tiny-resnet20-partial_ft" not in tiny and "tiny-mobilenet_v2-ready" not in tiny
    assert profile.train_config("ready", "tiny").epochs == 0


@pytest.mark.parametrize("change, message", [
    (('arch = "test_efficientnet"', 'arch = "test_efficientnet9"'), "unknown model 'test_efficientnet9' in timm"),
    (('source = "timm"', 'source = "keras"'), "models.effnet.source is 'keras'; choose one of"),
    (('source = "timm"', 'source = "timm"\ntrained = "yes"'), "models.effnet.trained is 'yes'; expected true or false"),
    (("[models.mobilenet_v2]\nweights = \"pretext\"", "[weights]\nmobilenet_v2 = \"pretext\""),
     r"\[weights\] is now per model"),
    (("[floors.tiny.effnet]\nfull_ft = 0.2", "[floors.tiny.effnet]\nfull_ft = \"high\""), "floors.tiny.effnet must be an accuracy"),
    (('models = ["mobilenet_v2", "effnet"]', 'models = ["mobilenet_v2", "nonet"]'), "unknown model 'nonet' in torchvision"),
])
def test_bad_model_entries_are_named(tmp_path, change, message):
    path = write(tmp_path)
    text = open(path).read().replace(*change)
    open(path, "w").write(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(path, catalogue())


def test_missing_floor_of_a_second_model_is_named(tmp_path):
    path = write(tmp_path)
    text = open(path).read().replace("full_ft_structured = 0.1\n", "")
    open(path, "w").write(text)
    with pytest.raises(ConfigError, match=r"floors.tiny has no accuracy floor for \['full_ft_structured'\]"):
        load_profile(path, catalogue())


def folder(root, size, classes=("cat", "dog")):
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (size, size), (10, 20, 30)).save(root / split / name / "0.png")
    return root


def test_your_own_image_folder_takes_the_nearest_datasets_recipe(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    added = add_image_folder(profile, f"woof=imagefolder:{folder(tmp_path / 'woof', 80)}")
    woof = added.datasets["woof"]
    assert (woof.native_size, woof.input_size, woof.source) == (80, 96, "imagefolder")
    assert woof.overrides == profile.datasets["big"].overrides  # big (96 px) is nearest to 80 px
    assert "recipe of the profile's 'big'" in woof.note and "not asserted" in woof.note
    cases = ids(added, "woof")
    assert "woof-mobilenet_v2-full_ft" in cases and "woof-effnet-teacher" in cases
    assert all(added.floor("woof", c.split("-")[-1], c.split("-")[1]) is None for c in cases)
    with pytest.raises(ConfigError, match="has a dataset 'tiny' already; replace its source with --data-source"):
        add_image_folder(profile, f"tiny=imagefolder:{tmp_path / 'woof'}")
    with pytest.raises(ConfigError, match="bad --dataset"):
        add_image_folder(profile, "woof2=cifar10")
