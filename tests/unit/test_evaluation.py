from pathlib import Path

import numpy as np
import pytest

from components.evaluation.evaluate import (
    classification_metrics,
    expected_calibration_error,
    plot_confusion,
    plot_curves,
)


def _proba(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 1.5
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 14])
def test_plots_are_written_for_binary_multiclass_and_many_classes(tmp_path: Path,
                                                                  k: int) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, 400)
    proba = _proba(rng, y, k)
    classes = [f"class_{i}" for i in range(k)]
    m = classification_metrics(y, proba, classes)
    plot_confusion(np.asarray(m["confusion_matrix"]), classes, tmp_path / "cm.png")
    plot_curves(y, proba, classes, tmp_path / "curves.png")
    for name in ("cm.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_curves_skip_a_class_absent_from_the_split(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array([0, 0, 1, 1])
    proba = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.4, .5, .1]])
    before = plt.get_fignums()
    plot_curves(y, proba, ["a", "b", "c"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert plt.get_fignums() == before  # the figure is closed


def test_calibration_error_of_a_perfectly_calibrated_model_is_zero() -> None:
    y = np.array([0, 0, 0, 1])
    proba = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(y, proba) == pytest.approx(0.0)
