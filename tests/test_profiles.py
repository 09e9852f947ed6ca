import pytest

from mnv2core.errors import ConfigError
from mnv2core.grid import build_grid
from mnv2core.metrics import accuracy
from mnv2core.profiles import available_profiles, load_profile
from mnv2core.techniques import catalogue

MINIMAL = """
[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32
{dataset_extra}

[models.mobilenet_v2]
weights = "none"

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
    profile = load_profile(name, catalogue())
    cases = build_grid(profile, catalogue())
    trained = {"partial_ft", "full_ft", "scratch", "kd", "teacher"}
    compressed = {f"{base}_{c}" for base in ("full_ft", "kd")
                  for c in ("prune", "structured", "lottery", "svd", "spectra")}
    if name == "smoke":  # the distilled model: only pruning (retrained by distillation)
        compressed -= {f"kd_{c}" for c in ("structured", "lottery", "svd", "spectra")}
    deployed = {f"{base}_{d}" for base in ("partial_ft", "full_ft", "kd", "full_ft_prune")
                for d in ("int8", "onnx", "latency", "fgsm", "robustness")} | {f"{base}_{d}" for base in ("full_ft", "kd") for d in ("gradcam", "pgd")}
    # PyTorch's compiled runtimes and OpenVINO: every base in full, one in smoke (compiling takes seconds)
    for runtime in ("compiled", "openvino"):
        deployed |= {f"full_ft_{runtime}"} if name == "smoke" else {f"{base}_{runtime}" for base in
                                                                     ("partial_ft", "full_ft", "kd", "full_ft_prune")}
    # DeconvNet: a fine-tuned model and the VGG16 in smoke, the distilled one too in full
    deployed |= {"full_ft_deconvnet", "vgg_train_deconvnet"} | ({"kd_deconvnet"} if name != "smoke" else set())
    companions = {t for study in ("vgg_si", "light", "lowrank", "speed") for t in catalogue().study_techniques(study)}
    assert {c.technique for c in cases} == trained | compressed | deployed | companions
    measured_only = deployed | {"full_ft_spectra", "kd_spectra", "train_speed"}
    floors = [profile.floor(c.dataset, c.technique) for c in cases if c.technique not in measured_only]
    assert all(0.0 <= floor <= 1.0 for floor in floors)
    assert all(profile.floor(c.dataset, c.technique) is None for c in cases if c.technique in measured_only)


def test_smoke_is_the_offline_synthetic_cpu_profile():
    profile = load_profile("smoke", catalogue())
    assert profile.device == "cpu"
    assert {d.source for d in profile.datasets.values()} == {"synthetic", "digits"}
    assert sorted(d.native_size for d in profile.datasets.values()) == [28, 32, 96]


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_profile("nope", catalogue())


def test_minimal_profile_and_grid_ids(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    assert [c.id for c in build_grid(profile, catalogue())] == ["tiny-mobilenet_v2-scratch"]


@pytest.mark.parametrize("extra, message", [
    ("colour = 3", "unknown key"),
    ('optimizer = "lbfgs"', "optimizer"),
    ("epochs = 0", "epochs"),
])
def test_bad_technique_entries_are_named(tmp_path, extra, message):
    text = MINIMAL.replace("epochs = 1\n", "").format(dataset_extra="", technique_extra=extra + (
        "" if "epochs" in extra else "\nepochs = 1"))
    with pytest.raises(ConfigError, match=message):
        load_profile(write(tmp_path, text=text), catalogue())


def test_missing_floor_is_an_error(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="").replace("scratch = 0.0", "")
    with pytest.raises(ConfigError, match="no accuracy floor"):
        load_profile(write(tmp_path, text=text), catalogue())


def test_per_dataset_overrides(tmp_path):
    extra = "[datasets.tiny.overrides.scratch]\nepochs = 5\ninput = \"native\""
    profile = load_profile(write(tmp_path, dataset_extra=extra), catalogue())
    assert profile.train_config("scratch", "tiny").epochs == 5
    assert profile.techniques["scratch"].epochs == 1


def test_unknown_dataset_or_technique_selection(tmp_path):
    profile = load_profile(write(tmp_path), catalogue())
    with pytest.raises(ConfigError, match=r"choose from \['tiny'\]"):
        build_grid(profile, catalogue(), ["cifar100"])
    with pytest.raises(ConfigError, match="technique"):
        build_grid(profile, catalogue(), None, ["prune"])


def test_gate_tolerances_come_from_the_profile(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + (
        "\n[gate]\naccuracy_points = 0.05\n[gate.per_metric]\nint8_accuracy = 0.08\n")
    gate = load_profile(write(tmp_path, text=text), catalogue()).gate
    assert gate.accuracy_points == 0.05 and gate.for_metric("int8_accuracy", accuracy()) == 0.08
    assert gate.for_metric("accuracy", accuracy()) == 0.05
    with pytest.raises(ConfigError, match="gate.accuracy_points is -1; expected values >= 0"):
        load_profile(write(tmp_path, text=text.replace("0.05", "-1")), catalogue())
    with pytest.raises(ConfigError, match="unknown key.*accuracy"):
        load_profile(write(tmp_path, text=text.replace("accuracy_points", "accuracy")), catalogue())

COMPRESSION = """
[compression]
bases = ["scratch"]
[compression.prune]
rounds = 2
epochs = 3
lr = 0.5
"""


def test_compression_cases_need_floors_and_retrain_from_the_base_recipe(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + COMPRESSION
    with pytest.raises(ConfigError, match=r"floors.tiny has no accuracy floor for \['scratch_prune'\]"):
        load_profile(write(tmp_path, text=text), catalogue())
    text = text.replace("scratch = 0.0", "scratch = 0.0\nscratch_prune = 0.1")
    profile = load_profile(write(tmp_path, text=text), catalogue())
    (technique, base, compression), = profile.compressed_cases()
    assert (technique, base) == ("scratch_prune", "scratch")
    assert compression.params == {"rounds": 2, "amount": 0.2, "scope": "layer", "skip_depthwise": True}
    retrain = profile.retrain_config(compression, base, "tiny")
    assert (retrain.epochs, retrain.lr, retrain.batch_size) == (3, 0.5, 16)
    assert [c.technique for c in build_grid(profile, catalogue())] == ["scratch", "scratch_prune"]


@pytest.mark.parametrize("change, message", [
    (('bases = ["scratch"]', 'bases = ["kd"]'), "compression.bases names 'kd'"),
    (("[compression.prune]", "[compression.quantize]"), "unknown compression technique 'quantize'"),
    (("rounds = 2", "round = 2"), r"unknown key\(s\) \['round'\]"),
])
def test_bad_compression_tables_are_named(tmp_path, change, message):
    text = (MINIMAL.format(dataset_extra="", technique_extra="") + COMPRESSION).replace(*change)
    with pytest.raises(ConfigError, match=message):
        load_profile(write(tmp_path, text=text), catalogue())


def test_a_compression_technique_can_narrow_the_bases(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + COMPRESSION.replace(
        'bases = ["scratch"]', 'bases = ["scratch", "kd"]') + "[compression.svd]\nbases = [\"scratch\"]\n"
    text = text.replace("[techniques.scratch]", "[techniques.kd]\nepochs = 1\nbatch_size = 16\n[techniques.scratch]")
    text = text.replace("scratch = 0.0", "scratch = 0.0\nkd = 0.0\nteacher = 0.0\nscratch_prune = 0.0\nkd_prune = 0.0\n"
                                         "scratch_svd = 0.0")
    text = text.replace("[techniques.kd]", "[techniques.teacher]\nepochs = 1\nbatch_size = 16\n[techniques.kd]")
    profile = load_profile(write(tmp_path, text=text), catalogue())
    assert [t for t, _, _ in profile.compressed_cases()] == ["scratch_prune", "scratch_svd", "kd_prune"]
    with pytest.raises(ConfigError, match=r"compression.svd.bases \['teacher'\] are not in compression.bases"):
        load_profile(write(tmp_path, text=text.replace('bases = ["scratch"]\n', 'bases = ["teacher"]\n')), catalogue())
    lottery = text + "[compression.lottery]\nepochs = 1\n"
    with pytest.raises(ConfigError, match=r"compression.lottery of \['scratch', 'kd'\] needs compression.prune"):
        load_profile(write(tmp_path, text=lottery.replace("[compression.prune]", "[compression.spectra]")
                           .replace("rounds = 2\n", "")), catalogue())


def test_a_deployment_technique_can_narrow_the_bases_or_name_its_own(tmp_path):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + (
        '\n[deployment]\nbases = ["scratch"]\n[deployment.fgsm]\n[deployment.gradcam]\nbases = []\n')
    profile = load_profile(write(tmp_path, text=text), catalogue())
    assert [t for t, _, _, _ in profile.deployment_cases()] == ["scratch_fgsm"]
    smoke = load_profile("smoke", catalogue())  # VGG16 is explained, not deployed
    assert "vgg_train" not in smoke.deployment_bases
    assert [t for t, _, _, _ in smoke.deployment_cases() if t.startswith("vgg_train")] == ["vgg_train_deconvnet"]
    with pytest.raises(ConfigError, match=r"deployment.gradcam.bases names \['sharpen'\], not techniques of this"):
        load_profile(write(tmp_path, text=text.replace("bases = []", 'bases = ["sharpen"]')), catalogue())


def test_a_deployment_technique_can_narrow_the_models_and_datasets_it_runs_on(tmp_path):
    text = MINIMAL.format(dataset_extra='models = ["mobilenet_v2", "resnet18"]', technique_extra="") + (
        '\n[datasets.other]\nsource = "synthetic"\nnative_size = 32\ninput_size = 32\ntrain_size = 64\ntest_size = 32\n'
        '[floors.other]\nscratch = 0.0\n'
        '[techniques.partial_ft]\nepochs = 1\nbatch_size = 16\n[floors.tiny.resnet18]\npartial_ft = 0.0\n'
        '[floors.tiny.mobilenet_v2]\npartial_ft = 0.0\n[floors.other.mobilenet_v2]\npartial_ft = 0.0\n'
        '[deployment]\nbases = ["partial_ft"]\n[deployment.fgsm]\n'
        '[deployment.compiled]\nmodels = ["resnet18"]\ndatasets = ["tiny"]\n')
    profile = load_profile(write(tmp_path, text=text), catalogue())
    deployed = {c.id for c in build_grid(profile, catalogue()) if c.base}
    assert deployed == {"tiny-mobilenet_v2-partial_ft_fgsm", "tiny-resnet18-partial_ft_fgsm",
                        "other-mobilenet_v2-partial_ft_fgsm", "tiny-resnet18-partial_ft_compiled"}
    with pytest.raises(ConfigError, match=r"deployment.compiled.models names \['resnet19'\], not one of"):
        load_profile(write(tmp_path, text=text.replace('models = ["resnet18"]\n', 'models = ["resnet19"]\n')),
                     catalogue())
    with pytest.raises(ConfigError, match=r"deployment.compiled.datasets names \['tiny2'\]"):
        load_profile(write(tmp_path, text=text.replace('datasets = ["tiny"]', 'datasets = ["tiny2"]')), catalogue())


def test_threads_is_a_positive_whole_number(tmp_path):
    assert load_profile("smoke", catalogue()).threads == 1
    text = MINIMAL.format(dataset_extra="", technique_extra="")
    assert load_profile(write(tmp_path, text=text), catalogue()).threads is None
    with pytest.raises(ConfigError, match="threads is 0; expected values >= 1"):
        load_profile(write(tmp_path, text="threads = 0\n" + text), catalogue())


@pytest.mark.parametrize("key", ["amp", "channels_last"])
def test_execution_switches_are_booleans(tmp_path, key):
    text = MINIMAL.format(dataset_extra="", technique_extra="")
    profile = load_profile(write(tmp_path, text=text), catalogue())
    assert (profile.amp, profile.channels_last) == (False, True)  # fp32, NHWC by default
    assert getattr(load_profile(write(tmp_path, text=f"{key} = false\n" + text), catalogue()), key) is False
    with pytest.raises(ConfigError, match=f": {key} is 'false'; expected true or false"):
        load_profile(write(tmp_path, text=f'{key} = "false"\n' + text), catalogue())


@pytest.mark.parametrize("technique_extra, expected", [
    ('step_epochs = "two"', "techniques.scratch.step_epochs is 'two'; expected a whole number"),
    ("bn_recalibration_images = 1.5", "techniques.scratch.bn_recalibration_images is 1.5; expected a whole number"),
    ('augment = "false"', "techniques.scratch.augment is 'false'; expected true or false"),
    ('lr = "fast"', "techniques.scratch.lr is 'fast'; expected a number"),
])
def test_wrong_types_are_named_before_anything_runs(tmp_path, technique_extra, expected):
    path = write(tmp_path, technique_extra=technique_extra)
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    assert str(error.value) == f"{path}: {expected}"


def test_every_wrong_type_gets_its_own_line(tmp_path):
    path = write(tmp_path, dataset_extra='note = 5\nstudies = "mobilenet"', technique_extra="size = true")
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    assert str(error.value).splitlines() == [
        f"{path}: techniques.scratch.size is True; expected a whole number",
        f"{path}: datasets.tiny.note is 5; expected a string",
        f"{path}: datasets.tiny.studies is 'mobilenet'; expected a list of strings"]


@pytest.mark.parametrize("table, expected", [
    ('[deployment.pgd]\nsteps = "ten"', "deployment.pgd.steps is 'ten'; expected a whole number"),
    ("[deployment.pgd]\nepsilon = 2.0", "deployment.pgd.epsilon is 2.0; expected values <= 1"),
    ("[deployment.latency]\nbatch_sizes = [1, 8.5]", "deployment.latency.batch_sizes is [1, 8.5]; expected a list of whole numbers"),
    ("[compression.prune]\namount = 1.5", "compression.prune.amount is 1.5; expected values <= 0.99"),
    ("[compression.svd]\nkeep_ratios = [0.5, 2]", "compression.svd.keep_ratios is [0.5, 2]; expected values <= 1"),
    ("[studies.speed]\nrounds = -5", "studies.speed.rounds is -5; expected values >= 0"),
])
def test_technique_and_study_parameters_are_typed_and_ranged_by_the_registry(tmp_path, table, expected):
    text = MINIMAL.format(dataset_extra="", technique_extra="") + "\n" + table + "\n"
    path = write(tmp_path, text=text)
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    assert str(error.value) == f"{path}: {expected}"


def test_a_string_parameter_takes_one_of_its_choices(tmp_path):
    path = write(tmp_path, text=MINIMAL.format(dataset_extra="", technique_extra="") + '\n[compression.prune]\nscope = "local"\n')
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    assert str(error.value) == f"{path}: compression.prune.scope is 'local'; choose one of ['global', 'layer', 'normalized']"


def test_cases_run_after_what_they_wait_for_and_long_poles_first():
    from mnv2core.grid import plan, schedule_rank
    profile = load_profile("smoke", catalogue())
    templates = plan(profile, catalogue())
    cases = sorted(build_grid(profile, catalogue(), ["synthetic32"]), key=lambda c: schedule_rank(c, templates, catalogue()))
    order = [c.id.removeprefix("synthetic32-") for c in cases]
    assert order[:2] == ["resnet20-teacher", "vgg16-vgg_train"] and order[-1] == "mobilenet_v2-train_speed"
    for model in ("mobilenet_v2", "test_efficientnet"):  # each model's chain, on its own
        for later, earlier in [("full_ft", "partial_ft"), ("full_ft_prune", "full_ft"), ("full_ft_lottery", "full_ft_prune"),
                               ("full_ft_prune_int8", "full_ft_prune")]:
            assert order.index(f"{model}-{later}") > order.index(f"{model}-{earlier}"), (model, later, earlier)
        # the next training starts before the measurements of the one it follows: the trainings are the critical path
        assert order.index(f"{model}-full_ft") < order.index(f"{model}-partial_ft_int8") < order.index(f"{model}-full_ft_prune_int8")
        assert order.index(f"{model}-full_ft_lottery") < order.index(f"{model}-full_ft_int8")
    assert order.index("vgg16-vgg_si") > order.index("vgg16-vgg_head")
    assert order.index("mobilenet_v2-kd_prune") > order.index("mobilenet_v2-kd")
    # what waits for the teacher starts a level later than its depth (no worker idles on the teacher's
    # lock), yet before the fine-tuned models' measurements (its chain is not left to run alone at the end)
    first_kd = min(i for i, t in enumerate(order) if "-kd" in t)
    assert order[first_kd] == "mobilenet_v2-kd" and first_kd > order.index("test_efficientnet-full_ft")
    assert first_kd < order.index("mobilenet_v2-partial_ft_int8") and order.index("mobilenet_v2-kd_prune") < order.index("mobilenet_v2-full_ft_int8")


@pytest.mark.parametrize("arrival", ["grid", "reversed"])
def test_within_a_rank_the_case_whose_inputs_started_first_goes_first(arrival):
    """pytest collects test_compression.py before test_training.py: on CIFAR-10 the distilled
    student (30 min, its teacher done for half an hour) queued behind every compression of a
    full fine-tuning that had just begun. Whatever the arrival order, it now goes first."""
    from mnv2core.grid import plan, schedule_rank
    profile = load_profile("smoke", catalogue())
    templates = plan(profile, catalogue())
    cases = build_grid(profile, catalogue(), ["synthetic32"])
    if arrival == "reversed":
        cases = cases[::-1]
    ranked = sorted(cases, key=lambda c: schedule_rank(c, templates, catalogue()))
    order = [c.id.removeprefix("synthetic32-") for c in ranked]
    kd = order.index("mobilenet_v2-kd")
    assert schedule_rank(ranked[kd], templates, catalogue())[0] == schedule_rank(
        templates["synthetic32-mobilenet_v2-full_ft_prune"], templates, catalogue())[0]  # the same rank
    for model in ("mobilenet_v2", "test_efficientnet"):
        for compression in ("prune", "structured", "svd", "spectra"):
            assert kd < order.index(f"{model}-full_ft_{compression}"), (model, compression)


@pytest.mark.parametrize("change, expected", [
    (("input_size = 32", "input_size = 0"), "datasets.tiny.input_size is 0; expected values > 0"),
    (("input_size = 32", "input_size = -8"), "datasets.tiny.input_size is -8; expected values > 0"),
    (("native_size = 32", "native_size = 0"), "datasets.tiny.native_size is 0; expected values > 0"),
    (("train_size = 64", "train_size = 0"), "datasets.tiny.train_size is 0; expected values > 0"),
    (("batch_size = 16", "batch_size = 0"), "techniques.scratch.batch_size is 0; expected values > 0"),
    (("[datasets.tiny]", "eval_batch_size = 0\n[datasets.tiny]"), "eval_batch_size is 0; expected values > 0"),
    (("[datasets.tiny]", 'device = "tpu"\n[datasets.tiny]'), "device is 'tpu'; choose one of ['auto', 'cpu', 'cuda']"),
    (('source = "synthetic"', 'source = "imagenet"'),
     "datasets.tiny.source is 'imagenet'; choose one of ['synthetic', 'digits', 'cifar10', 'stl10', 'mnist', 'imagefolder']"),
    (("test_size = 32", "test_size = 32\nclasses = 1"), "datasets.tiny.classes is 1; expected values >= 2"),
])
def test_every_size_and_batch_is_positive_and_every_choice_named(tmp_path, change, expected):
    """Each used to pass validation and die mid-run in a long traceback (F.interpolate, range())."""
    path = write(tmp_path, text=MINIMAL.format(dataset_extra="", technique_extra="").replace(*change))
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    assert str(error.value) == f"{path}: {expected}"


def test_a_missing_required_key_and_an_unknown_one_are_named(tmp_path):
    text = MINIMAL.format(dataset_extra="colour = 3", technique_extra="").replace("native_size = 32\n", "")
    path = write(tmp_path, text=text)
    with pytest.raises(ConfigError) as error:
        load_profile(path, catalogue())
    lines = str(error.value).splitlines()
    assert f"{path}: datasets.tiny: missing 'native_size'" in lines
    assert any(line.startswith(f"{path}: datasets.tiny: unknown key(s) ['colour']; allowed: [") for line in lines)


def test_an_image_side_beyond_what_the_harness_takes_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets.tiny.input_size is 100000; expected values <= 1024$"):
        load_profile(write(tmp_path, text=MINIMAL.format(dataset_extra="", technique_extra="").replace(
            "input_size = 32", "input_size = 100000")), catalogue())
