"""The results page: which variant to deploy (Pareto front), the figures, and the command."""
from results_factory import document, entry

from mnv2core.cli import main
from mnv2core.docs import deployment_variants, pareto_front, write_results_page
from mnv2core.results import case_items

PARAMETERS = 2_000_000


def study_document():
    ms = {"eager_fp32": 9.0, "fx_int8": 5.0, "ort_fp32": 1.4, "ort_int8": 0.7}
    latency = {"latency": {f"{r}_b1_ms": v for r, v in ms.items()}, "latency_iqr": {f"{r}_b1_iqr": 0.1 for r in ms},
               "speedup": {f"{r}_b1_speedup": 9.0 / v for r, v in ms.items() if r != "eager_fp32"},
               "fastest": {"b1": "ort_int8"}}
    return document([
        entry("real-mobilenet_v2-full_ft", 0.88, metrics={"parameters": PARAMETERS,
                                                          "epochs": [{"epoch": 1, "test_accuracy": 0.86},
                                                                     {"epoch": 2, "test_accuracy": 0.88}]}),
        entry("real-mobilenet_v2-full_ft_int8", 0.85, base="full_ft", derived="int8",
              metrics={"fp32_accuracy": 0.88, "int8_drop": 0.03, "calibration_images": 256}),
        entry("real-mobilenet_v2-full_ft_onnx", 0.88, base="full_ft", derived="onnx",
              metrics={"ort_int8_accuracy": 0.876, "top1_agreement": 1.0, "max_abs_logit_diff": 1e-5,
                       "onnx_bytes": 8_900_000, "onnx_int8_bytes": 2_500_000}),
        entry("real-mobilenet_v2-full_ft_latency", metrics=latency, base="full_ft", derived="latency"),
        entry("real-mobilenet_v2-full_ft_robustness", 0.88, base="full_ft", derived="robustness",
              metrics={"blur": {"sigma_1_accuracy": 0.7}, "noise": {"sigma_0.1_accuracy": 0.6}, "plot": "gone.png"}),
    ])


def test_every_runtime_becomes_a_variant_with_its_accuracy_latency_and_size():
    rows = {row["runtime"]: row for row in deployment_variants(case_items(study_document()))}
    assert set(rows) == {"eager fp32", "FX int8", "ORT fp32", "ORT int8"}
    assert (rows["FX int8"]["accuracy"], rows["FX int8"]["latency ms (b1)"], rows["FX int8"]["size MB"]) == (0.85, 5.0, 2.0)
    assert rows["ORT int8"]["accuracy"] == 0.876 and rows["eager fp32"]["size MB"] == 8.0


def test_the_pareto_front_keeps_only_variants_nothing_beats_on_both_axes():
    rows = [{"key": k, "accuracy": a, "latency ms (b1)": ms} for k, a, ms in
            [("slow best", 0.9, 10.0), ("fast good", 0.85, 1.0), ("dominated", 0.8, 2.0), ("fastest", 0.5, 0.5),
             ("tie of fast good", 0.85, 1.0)]]
    assert pareto_front(rows) == {"slow best", "fast good", "tie of fast good", "fastest"}


def test_the_page_has_the_tables_and_small_figures(tmp_path):
    page = write_results_page([study_document()], tmp_path / "docs", ["cpu-real.json"])
    text = page.read_text()
    assert "### real" in text and "| mobilenet_v2 full_ft | ORT int8 |" in text.replace("  ", " ").replace("  ", " ")
    for figure in ("real-pareto.png", "real-robustness.png", "real-convergence.png"):
        assert f"]({figure})" in text
        assert (tmp_path / "docs" / figure).read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "docs" / figure).stat().st_size < 200_000


def test_the_docs_command_writes_the_page(tmp_path, capsys):
    import json
    results = tmp_path / "cpu-real.json"
    results.write_text(json.dumps(study_document()))
    assert main(["docs", str(results), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "RESULTS.md").is_file() and "wrote" in capsys.readouterr().out


def test_grad_cam_overlays_of_two_datasets_sit_side_by_side(tmp_path):
    from mnv2core.docs import _pyplot
    plt = _pyplot()
    documents = []
    for dataset in ("cifar10", "stl10"):
        overlay = tmp_path / f"{dataset}-overlay.png"
        plt.imsave(overlay, [[0.0, 1.0], [1.0, 0.0]])
        documents.append(document([entry(f"{dataset}-mobilenet_v2-full_ft_gradcam", base="full_ft", derived="gradcam",
                                         metrics={"plot": str(overlay)})]))
    sources = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]  # the figures sit beside them
    text = write_results_page(documents, tmp_path / "docs", sources).read_text()
    assert "## Grad-CAM side by side" in text and "](gradcam-datasets.png)" in text
    assert (tmp_path / "docs" / "gradcam-datasets.png").read_bytes()[:4] == b"\x89PNG"
    one = write_results_page(documents[:1], tmp_path / "one", sources[:1]).read_text()
    assert "side by side" not in one  # one dataset: nothing to set beside it


def test_a_page_figure_found_neither_where_the_run_wrote_it_nor_beside_the_results_fails_in_one_line(tmp_path):
    """Committed results keep their page figures in plots/ beside them, so a clean clone draws
    the same page; without them the page fails instead of silently dropping a section."""
    import json

    import pytest

    from mnv2core.docs import _pyplot
    from mnv2core.errors import ConfigError
    recorded = tmp_path / "run" / ".mnv2results" / "plots" / "real-full_ft-gradcam.png"  # the run's machine
    doc = document([entry("real-mobilenet_v2-full_ft_gradcam", base="full_ft", derived="gradcam",
                          metrics={"plot": str(recorded)})])
    results = tmp_path / "baselines" / "cpu-real.json"
    results.parent.mkdir()
    results.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"puts .*real-full_ft-gradcam.png on the page, but it is neither there "
                                          r"\(under .*\) nor at .*baselines/plots/real-full_ft-gradcam.png: copy it"):
        write_results_page([doc], tmp_path / "docs", [str(results)])
    (results.parent / "plots").mkdir()
    _pyplot().imsave(results.parent / "plots" / recorded.name, [[0.0, 1.0], [1.0, 0.0]])
    text = write_results_page([doc], tmp_path / "docs", [str(results)]).read_text()
    copies = list((tmp_path / "docs").glob("real-*gradcam.png"))
    assert len(copies) == 1 and f"]({copies[0].name})" in text


def test_a_results_file_never_makes_docs_read_a_file_outside_its_folder_or_copy_one_that_is_no_png(tmp_path):
    """A results file comes from elsewhere (a CI artifact, a colleague's run): a figure path that
    names any other local file is not read, a plots/ link out of the folder is not followed, a
    file that is no PNG is refused, and nothing is written before that is known."""
    import json
    import os

    import pytest

    from mnv2core.errors import ConfigError
    secret = tmp_path / "credentials"
    secret.write_text("token=hunter2")
    results = tmp_path / "baselines" / "cpu-real.json"
    (results.parent / "plots").mkdir(parents=True)

    def page_with(path):
        doc = document([entry("real-mobilenet_v2-full_ft_gradcam", base="full_ft", derived="gradcam",
                              metrics={"plot": str(path)})])
        results.write_text(json.dumps(doc))
        return lambda: write_results_page([doc], tmp_path / "docs", [str(results)])

    with pytest.raises(ConfigError, match=r"puts .*credentials on the page, but it is neither there \(under "):
        page_with(secret)()
    os.symlink(secret, results.parent / "plots" / "escape.png")
    with pytest.raises(ConfigError, match=r"puts .*escape.png on the page, but it is neither there"):
        page_with(tmp_path / "escape.png")()
    (results.parent / "plots" / "text.png").write_text("not an image")
    with pytest.raises(ConfigError, match=r"puts .*plots/text.png on the page, but it is not a PNG: nothing was "
                                          r"written"):
        page_with(results.parent / "plots" / "text.png")()
    assert not (tmp_path / "docs").exists()


def test_the_full_report_on_the_page_links_committed_figures_and_names_no_path_of_the_machine_that_ran(tmp_path):
    """A figure a case recorded is a link beside the page when committed with the results (a
    page figure, or one kept in plots/), else "not committed": never the run's own path."""
    import json

    from mnv2core.docs import _pyplot
    ran = tmp_path / "run" / ".mnv2results" / "plots"
    doc = document([entry("real-mobilenet_v2-full_ft_gradcam", base="full_ft", derived="gradcam",
                          metrics={"input_size": 96, "feature_map": [3, 3], "deletion_auc": 0.3, "insertion_auc": 0.7,
                                   "top10_mass_share": 0.3, "layer": "net.features", "images": 64, "entropy": 0.9,
                                   "plot": str(ran / "real-gradcam.png")}),
                    entry("real-mobilenet_v2-full_ft_robustness", 0.88, base="full_ft", derived="robustness",
                          metrics={"blur": {"sigma_1_accuracy": 0.7}, "noise": {"sigma_0.1_accuracy": 0.6},
                                   "plot": str(ran / "real-robust.png")}),
                    entry("real-mobilenet_v2-kd_robustness", 0.5, base="kd", derived="robustness",
                          metrics={"blur": {"sigma_1_accuracy": 0.4}, "noise": {"sigma_0.1_accuracy": 0.3},
                                   "plot": str(ran / "real-kd-robust.png")})])
    results = tmp_path / "baselines" / "cpu-real.json"
    (results.parent / "plots").mkdir(parents=True)
    results.write_text(json.dumps(doc))
    for kept in ("real-gradcam.png", "real-robust.png"):
        _pyplot().imsave(results.parent / "plots" / kept, [[0.0, 1.0], [1.0, 0.0]])
    text = write_results_page([doc], tmp_path / "docs", [str(results)]).read_text()
    assert str(ran) not in text and ".mnv2results" not in text
    assert "[png](real-mobilenet_v2-full_ft-gradcam.png)" in text and "[png](real-robust.png)" in text
    assert (tmp_path / "docs" / "real-robust.png").is_file() and text.count("not committed") == 1


def test_the_techniques_page_lists_every_registered_technique_with_its_metrics_and_is_committed_as_generated(tmp_path):
    from pathlib import Path

    from mnv2core.technique_page import techniques_page
    from mnv2core.techniques import catalogue

    page_file = tmp_path / "techniques.md"
    assert main(["techniques", "-o", str(page_file)]) == 0
    page = page_file.read_text()
    for name, technique in catalogue().techniques.items():
        assert f"\n## {name}\n" in page and technique.title in page
        assert all(f"`{metric.name}`" in page for metric in technique.metrics)
    assert "`calibration_batches = 8`" in page  # a parameter's default, from the technique's schema
    committed = Path(__file__).resolve().parents[1] / "docs" / "techniques.md"
    assert committed.read_text() == techniques_page(catalogue(), "python -m mnv2core techniques -o docs/techniques.md"), \
        "docs/techniques.md is stale: run python -m mnv2core techniques -o docs/techniques.md"


def test_the_readmes_results_excerpt_is_drawn_from_the_generated_results_page():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme, page = (root / "README.md").read_text(), (root / "docs" / "RESULTS.md").read_text()
    excerpt = readme.split("## What you get", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in excerpt.splitlines() if line.startswith("|")]
    assert len(rows) >= 3 and all(row in page for row in rows), "README's excerpt is not on docs/RESULTS.md: copy it again"
