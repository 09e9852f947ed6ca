import pytest

from mnv2core.errors import ConfigError
from mnv2core.grid import TECHNIQUE_MODELS, build_grid
from mnv2core.profiles import available_profiles, load_profile

MINIMAL = """
[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32
{dataset_extra}

[weights]
mobilenet_v2 = "none"

[techniques.scratch]
epochs = 1
batch_size = 16
{technique_extra}

[floors.tiny]
scratch = 0.0
"""


def write(tmp_path, dataset_extra="", technique_extra="", text=None):
    path = tmp_path / "p.toml"
    path.write_text(text or MINIMAL.format(dataset_extra=dataset_extra, technique_extra=technique_extra))
    return str(path)


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_builtin_profiles_load_and_cover_the_grid(name):
    assert name in available_profiles()
    profile = load_profile(name, TECHNIQUE_MODELS)
    cases = build_grid(profile)
    assert {c.technique for c in cases} == {"partial_ft", "full_ft", "scratch", "kd", "teacher"}
    assert all(0.0 <= profile.floor(c.dataset, c.technique) <= 1.0 for c in cases)


def test_smoke_is_the_offline_synthetic_cpu_profile():
    profile = load_profile("smoke", TECHNIQUE_MODELS)
    assert profile.device == "cpu"
    assert {d.source for d in profile.datasets.values()} == {"synthetic"}
    assert sorted(d.native_size for d in profile.datasets.values()) == [32, 96]


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_profile("nope", TECHNIQUE_MODELS)


def test_minimal_profile_and_grid_ids(tmp_path):
    profile = load_profile(write(tmp_path), TECHNIQUE_MODELS)
    assert [c.id for c in build_grid(profile)] == ["tiny-mobilenet_v2-scratch"]


@pytest.mark.parametrize("extra, message", [
    ("colour = 3", "unknown key"),
    ('optimizer = "lbfgs"', "optimizer"),
    ("epochs = 0", "epochs"),
])
def test_bad_technique_entries_are_named(tmp_path, extra, message):
    text = MINIMAL.replace("epochs = 1\n", "").format(dataset_extra="", technique_extra=extra + (
        "" if "epochs" in extra else "\nepochs = 1"))
    with pytest.raises(ConfigError, match=message):
        load_profile(write(tmp_path, text=text), TECHNIQUE_MODELS)


def test_missing_floor_is_an_error(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="").replace("scratch = 0.0", "")
    with pytest.raises(ConfigError, match="no accuracy floor"):
        load_profile(write(tmp_path, text=text), TECHNIQUE_MODELS)


def test_per_dataset_overrides(tmp_path):
    extra = "[datasets.tiny.overrides.scratch]\nepochs = 5\ninput = \"native\""
    profile = load_profile(write(tmp_path, dataset_extra=extra), TECHNIQUE_MODELS)
    assert profile.train_config("scratch", "tiny").epochs == 5
    assert profile.techniques["scratch"].epochs == 1


def test_unknown_dataset_or_technique_selection(tmp_path):
    profile = load_profile(write(tmp_path), TECHNIQUE_MODELS)
    with pytest.raises(ConfigError, match=r"choose from \['tiny'\]"):
        build_grid(profile, ["cifar100"])
    with pytest.raises(ConfigError, match="technique"):
        build_grid(profile, None, ["prune"])


def test_gate_tolerances_come_from_the_profile(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + (
        "\n[gate]\naccuracy_points = 0.05\n[gate.per_metric]\nint8_accuracy = 0.08\n")
    gate = load_profile(write(tmp_path, text=text), TECHNIQUE_MODELS).gate
    assert gate.accuracy_points == 0.05 and gate.for_metric("int8_accuracy", "accuracy") == 0.08
    assert gate.for_metric("accuracy", "accuracy") == 0.05
    with pytest.raises(ConfigError, match="gate tolerances must be numbers >= 0"):
        load_profile(write(tmp_path, text=text.replace("0.05", "-1")), TECHNIQUE_MODELS)
    with pytest.raises(ConfigError, match="unknown key.*accuracy"):
        load_profile(write(tmp_path, text=text.replace("accuracy_points", "accuracy")), TECHNIQUE_MODELS)
