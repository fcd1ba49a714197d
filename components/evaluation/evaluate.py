"""Holdout metrics for a trained bundle, plus the plots a person would rather look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from components.common.settings import EvaluationSettings
from components.training.model import Classifier


def classification_metrics(y_true: np.ndarray, proba: np.ndarray,
                           classes: list[str]) -> dict[str, Any]:
    """``y_true`` holds class indices into ``classes``; ``proba`` one column per class."""
    y_pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    out: dict[str, Any] = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", labels=labels,
                                       zero_division=0)),
        "precision_macro": float(skm.precision_score(y_true, y_pred, average="macro",
                                                     labels=labels, zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", labels=labels,
                                               zero_division=0)),
        "log_loss": float(skm.log_loss(y_true, np.clip(proba, 1e-7, 1), labels=labels)),
        "n": len(y_true),
    }
    present = np.unique(y_true)
    if len(present) == len(classes) and len(classes) >= 2:
        if len(classes) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr",
                                                     average="macro", labels=labels))
    out["ece"] = expected_calibration_error(y_true, proba)
    for name, fn in (("f1", skm.f1_score), ("precision", skm.precision_score),
                     ("recall", skm.recall_score)):
        per_class = fn(y_true, y_pred, average=None, labels=labels, zero_division=0)
        out[f"{name}_per_class"] = {c: float(v) for c, v in zip(classes, per_class, strict=True)}
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["classes"] = classes
    return out


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    """Gap between confidence and accuracy, weighted over equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def slice_accuracy(frame: pd.DataFrame, correct: np.ndarray, columns: list[str],
                   min_rows: int) -> dict[str, dict[str, Any]]:
    """Accuracy per value of each column, and the gap between its best and worst slice
    (a fairness signal: a model can be accurate overall and poor for one region)."""
    out: dict[str, dict[str, Any]] = {}
    for col in columns:
        if col not in frame.columns:
            continue
        values = frame[col].astype("string").str.strip().str.lower().fillna("(missing)")
        scores = pd.Series(correct, index=frame.index).groupby(values.to_numpy()).agg(
            ["mean", "size"])
        scores = scores[scores["size"] >= min_rows]
        if len(scores) < 2:
            continue
        out[col] = {"accuracy": {str(k): float(v) for k, v in scores["mean"].items()},
                    "rows": {str(k): int(v) for k, v in scores["size"].items()},
                    "gap": float(scores["mean"].max() - scores["mean"].min())}
    return out


def slice_columns(settings: EvaluationSettings, categorical: list[str],
                  test: pd.DataFrame) -> list[str]:
    """The configured slice columns, else every categorical one with at most 20 values."""
    return settings.slices or [c for c in categorical if test[c].nunique() <= 20]


def evaluate_bundle(clf: Classifier, test: pd.DataFrame, out_dir: Path,
                    settings: EvaluationSettings | None = None) -> dict[str, Any]:
    """Score the test split; writes ``metrics.json``, ``confusion_matrix.png`` and
    ``curves.png`` (ROC, precision-recall and reliability)."""
    settings = settings or EvaluationSettings()
    index = {c: i for i, c in enumerate(clf.classes)}
    y_true = test[clf.schema.target].astype(str).map(index).to_numpy()
    proba = clf.predict_proba(test)
    result = classification_metrics(y_true, proba, clf.classes)
    slices = slice_accuracy(test, proba.argmax(axis=1) == y_true,
                            slice_columns(settings, clf.schema.categorical, test),
                            settings.min_slice_rows)
    if slices:
        worst = max(slices, key=lambda c: slices[c]["gap"])
        result["slices"] = slices
        result["max_slice_gap"] = slices[worst]["gap"]
        result["max_slice_gap_column"] = worst
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    plot_confusion(np.asarray(result["confusion_matrix"]), clf.classes,
                   out_dir / "confusion_matrix.png")
    plot_curves(y_true, proba, clf.classes, out_dir / "curves.png")
    return result


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=classes).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path) -> None:
    """One-vs-rest ROC and precision-recall per class, and a reliability diagram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    fig, (roc_ax, pr_ax, cal_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    shown = classes if len(classes) > 2 else classes[1:]
    drawn = [k for k in map(classes.index, shown[:12])  # beyond a dozen lines nobody reads
             if (y_true == k).any() and not (y_true == k).all()]  # a curve needs both
    for k in drawn:
        RocCurveDisplay.from_predictions(y_true == k, proba[:, k], name=classes[k], ax=roc_ax,
                                         plot_chance_level=k == drawn[-1])  # last in legend
        PrecisionRecallDisplay.from_predictions(y_true == k, proba[:, k], name=classes[k],
                                                ax=pr_ax)
    roc_ax.set(title="ROC (one vs rest)", xlabel="false positive rate",
               ylabel="true positive rate")
    pr_ax.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    # Top-label reliability: is the model right as often as its confidence says?
    correct = (proba.argmax(axis=1) == y_true).astype(int)
    confidence = np.clip(proba.max(axis=1), 0.0, 1.0)
    accuracy, centers = calibration_curve(correct, confidence, n_bins=10, pos_label=1)
    cal_ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    cal_ax.plot(centers, accuracy, "o-")
    cal_ax.set(title=f"Reliability (ECE {expected_calibration_error(y_true, proba):.3f})",
               xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    if drawn:
        roc_ax.legend(fontsize=8)
        pr_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
