"""Scores for imbalanced classes: checked against scikit-learn's on random predictions, and the
report's warning on an imbalanced test split."""
import pytest
import torch

from mnv2core.classification import imbalance, scores_of
from mnv2core.report import _imbalance_note


@pytest.mark.parametrize("classes", [2, 5])
def test_scores_match_scikit_learns(classes):
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(classes)
    labels = torch.cat([torch.zeros(70, dtype=torch.int64), torch.randint(0, classes, (30,), generator=g)])
    scores = torch.rand(100, generator=g)
    predicted = torch.where(torch.rand(100, generator=g) < 0.7, labels, torch.randint(0, classes, (100,), generator=g))
    ours = scores_of(labels, predicted, classes, scores if classes == 2 else None)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert ours["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(labels, predicted))
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(labels, predicted, average="macro"))
    assert ours["confusion"] == metrics.confusion_matrix(labels, predicted).tolist()
    assert ours["per_class_accuracy"] == pytest.approx(metrics.recall_score(labels, predicted, average=None).tolist())
    if classes == 2:
        assert ours["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, scores))
    else:
        assert "roc_auc" not in ours


def test_a_model_that_always_says_the_large_class_is_found_out():
    labels = torch.tensor([0] * 90 + [1] * 10)
    lazy = scores_of(labels, torch.zeros(100, dtype=torch.int64), 2, torch.full((100,), 0.5))
    assert lazy["accuracy"] == 0.9 and lazy["balanced_accuracy"] == 0.5 and lazy["roc_auc"] == 0.5
    assert imbalance(lazy["confusion"]) == 9.0
    items = {"mine-m-full_ft": {"metrics": {"confusion": lazy["confusion"]}}}
    note = _imbalance_note("mine", items)
    assert note.startswith("WARNING: the test classes are imbalanced (10 to 90 images per class)")
    assert "balanced accuracy" in note
    balanced = {"mine-m-full_ft": {"metrics": {"confusion": [[40, 10], [10, 40]]}}}
    assert _imbalance_note("mine", balanced) == ""


def test_an_imbalanced_image_folder_records_its_per_class_scores(tmp_path):
    from PIL import Image
    from test_case_layer import TINY

    from mnv2core.profiles import load_profile
    from mnv2core.study import Settings, Study
    from mnv2core.techniques import catalogue
    for split, counts in (("train", {"common": 24, "rare": 6}), ("test", {"common": 20, "rare": 5})):
        for shade, (name, count) in enumerate(counts.items()):
            (tmp_path / "folder" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), (200 * shade, 7 * i, 90)).save(tmp_path / "folder" / split / name / f"{i}.png")
    (tmp_path / "tiny.toml").write_text(TINY)
    study = Study(load_profile(str(tmp_path / "tiny.toml"), catalogue()),
                  Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results",
                           data_sources=(f"tiny=imagefolder:{tmp_path / 'folder'}",)))
    metrics = study.run_case(study.case("tiny", "partial_ft"))["metrics"]
    assert [sum(row) for row in metrics["confusion"]] == [20, 5]
    assert len(metrics["per_class_accuracy"]) == 2 and 0 <= metrics["roc_auc"] <= 1
    assert metrics["balanced_accuracy"] == pytest.approx(sum(metrics["per_class_accuracy"]) / 2)
