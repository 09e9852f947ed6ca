"""The one artifact key: its digest covers every field of its identity (and nothing else),
upstream keys by their digests, and a recipe that is not plain data is refused."""
import pytest

from mnv2core.keys import ArtifactKey

UPSTREAM = ArtifactKey("base", "full_ft", {"lr": 1e-4}, "code-a", seed=1)
KEY = ArtifactKey("case", "prune", {"amount": 0.2, "rounds": [1, 2]}, "code-b", seed=7, upstream={"full_ft": UPSTREAM})


def variants():
    yield ArtifactKey("case", "lottery", KEY.recipe, KEY.code, KEY.seed, KEY.upstream)
    yield ArtifactKey("case", "prune", {"amount": 0.3, "rounds": [1, 2]}, KEY.code, KEY.seed, KEY.upstream)
    yield ArtifactKey("case", "prune", KEY.recipe, "code-c", KEY.seed, KEY.upstream)
    yield ArtifactKey("case", "prune", KEY.recipe, KEY.code, 8, KEY.upstream)
    yield ArtifactKey("case", "prune", KEY.recipe, KEY.code, KEY.seed,
                      {"full_ft": ArtifactKey("base", "full_ft", {"lr": 2e-4}, "code-a", seed=1)})
    yield ArtifactKey("case", "prune", KEY.recipe, KEY.code, KEY.seed, {"kd": UPSTREAM})


def test_every_field_of_the_identity_changes_the_digest():
    digests = {key.digest for key in variants()} | {KEY.digest}
    assert len(digests) == 7


def test_label_target_and_recipe_order_do_not():
    same = ArtifactKey("renamed", "prune", {"rounds": [1, 2], "amount": 0.2}, "code-b", 7, {"full_ft": UPSTREAM},
                       target=("artifact", "d", "t", "m"))
    assert same == KEY and hash(same) == hash(KEY) and same.entry != KEY.entry
    assert KEY.entry == f"case-{KEY.digest}"


def test_walk_gives_upstream_first_each_once():
    diamond = ArtifactKey("top", "x", {}, "c", upstream={"a": KEY, "b": UPSTREAM})
    assert [k.label for k in diamond.walk()] == ["base", "case", "top"]


@pytest.mark.parametrize("value", [object(), ArtifactKey("u", "x", {}, "c")])
def test_a_recipe_of_anything_but_plain_data_is_refused(value):
    with pytest.raises(TypeError, match="plain data"):
        ArtifactKey("bad", "x", {"value": value}, "c")


def test_an_upstream_that_is_not_a_key_is_refused():
    with pytest.raises(TypeError, match="not an ArtifactKey"):
        ArtifactKey("bad", "x", {}, "c", upstream={"base": "7f9d9b61ab3219de71104ef5"})


# every builder of the registry on tiny data: each trained and compressed technique, the
# harness's pretext weights and a ready-trained model from a weights file
EVERY_BUILDER = """
description = "every builder"
device = "cpu"
eval_batch_size = 64
threads = 1

[datasets.tiny]
source = "synthetic"
native_size = 32
input_size = 32
train_size = 64
test_size = 32
studies = ["mobilenet", "distillation", "vgg_si", "lowrank"]
models = ["mobilenet_v2", "resnet20"]

[datasets.digits]
source = "digits"
native_size = 28
input_size = 28
train_size = 64
test_size = 32
studies = ["light"]

[models.mobilenet_v2]
weights = "pretext"
[models.resnet20]
source = "builtin"
arch = "cifar_resnet20"
weights = "{weights}"
trained = true
[models.resnet50]
weights = "none"
[models.resnet18]
weights = "none"

[pretext]
train_size = 64
epochs = 1
batch_size = 32

[techniques]
{recipes}

[studies.vgg_si]
lr_candidates = [0.05]
search_epochs = 1
si_fraction = 0.5
max_features = 4

[studies.lowrank]
keep_ratios = [0.5]
batch_size = 8
warmup = 0
rounds = 1

[compression]
bases = ["full_ft", "kd", "ready"]
[compression.prune]
rounds = 2
amount = 0.3
epochs = 1
[compression.structured]
epochs = 1
[compression.lottery]
epochs = 1
[compression.svd]
keep_ratios = [0.5]
epochs = 1
[compression.spectra]
epochs = 0

[floors]
{floors}
"""
TRAINED = ("partial_ft", "full_ft", "ready", "teacher", "scratch", "kd", "vgg_train", "vgg_head", "vgg_si",
           "light_cnn", "light_mlp", "light_lenet", "light_ultra", "light_medium", "resnet_head", "resnet_lowrank")


@pytest.fixture(scope="module")
def every_builder(tmp_path_factory):
    import torch

    from mnv2core.models import ModelSpec, build_model
    from mnv2core.profiles import load_profile
    from mnv2core.study import Settings
    from mnv2core.techniques import catalogue

    root = tmp_path_factory.mktemp("every_builder")
    torch.manual_seed(0)
    spec = ModelSpec("resnet20", "builtin", "cifar_resnet20", trained=True)
    torch.save(build_model(spec, 10).net.state_dict(), root / "resnet20.pth")
    recipes = "\n".join(f"{name} = {{epochs = 1, batch_size = 32, augment = false"
                        f"{', size = 32' if name.startswith('resnet') else ''}}}" for name in TRAINED)
    compressed = [f"{base}_{c}" for base in ("full_ft", "kd", "ready") for c in ("prune", "structured", "lottery", "svd")]
    floors = ("tiny = {" + ", ".join(f"{name} = 0.0" for name in (*TRAINED, *compressed) if not name.startswith("light"))
              + "}\ndigits = {" + ", ".join(f"{name} = 0.0" for name in TRAINED if name.startswith("light")) + "}")
    (root / "every.toml").write_text(EVERY_BUILDER.format(weights=root / "resnet20.pth", recipes=recipes,
                                                          floors=floors))
    profile = load_profile(str(root / "every.toml"), catalogue())
    return profile, Settings(cache_dir=root / "cache", results_dir=root / "results")


def test_every_builder_is_built_under_the_key_its_plan_gave_it(every_builder):
    """Plan every case's model without building anything, then build the grid in another
    study: the entries written are exactly the planned ones, for every builder."""
    import torch

    from mnv2core.grid import schedule_rank
    from mnv2core.planning import Plan
    from mnv2core.study import Study
    from mnv2core.techniques import catalogue

    profile, settings = every_builder
    plan = Plan(Study(profile, settings))
    cases = sorted(plan.study.templates.values(), key=lambda c: schedule_rank(c, plan.study.templates, catalogue()))
    planned = {entry for case in cases for entry in plan.needs(case)}
    assert not list(settings.cache_dir.glob("*.pt"))  # planning built and wrote nothing

    builders = {name for name, t in catalogue().techniques.items() if t.builder is not None}
    artifacts = [n.target for n in plan.nodes.values() if n.target[0] == "artifact"]
    assert {plan.study.case(*target[1:]).method for target in artifacts} == builders  # every builder is here

    study = Study(profile, settings)
    for case in cases:
        record = study.run_case(case)
        study.check(case, record)
        if case.method == "vgg_train":  # the profile's one lr candidate: nothing to search
            assert record["metrics"]["lr_search"] == [] and record["metrics"]["chosen_lr"] == 0.05
    kinds = {path.stem: torch.load(path, weights_only=True)["spec"]["kind"]
             for path in settings.cache_dir.glob("*.pt")}
    assert {entry for entry, kind in kinds.items() if kind in builders or kind == "pretext"} == set(plan.nodes)
    assert planned <= set(plan.nodes) and any(kind == "pretext" for kind in kinds.values())


def test_a_build_that_loads_what_its_key_does_not_name_fails(every_builder, tmp_path):
    """The distilled student's control trained by a builder that peeks at the teacher: its
    key does not name the teacher, so the build stops before it could be cached under a key
    that misses what it read."""
    import dataclasses

    from mnv2core import strategies
    from mnv2core.building import Trained
    from mnv2core.registry import Catalogue
    from mnv2core.study import Study
    from mnv2core.techniques import catalogue

    def peeking(ctx, case):
        ctx.artifact(case.dataset, "teacher")
        return strategies.train_from_scratch

    profile, settings = every_builder
    known = catalogue()
    techniques = {**known.techniques, "scratch": dataclasses.replace(known.get("scratch"), builder=Trained(peeking))}
    study = Study(profile, dataclasses.replace(settings, cache_dir=tmp_path / "cache"),
                  Catalogue(techniques, known.studies, known.tables, known.analyses))
    with pytest.raises(RuntimeError, match="asked for tiny-resnet50-teacher, which its key does not name"):
        study.artifact("tiny", "scratch")
    assert not list((tmp_path / "cache").glob("tiny-mobilenet_v2-scratch-*.pt"))
