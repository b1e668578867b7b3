"""Classification metrics as pandas tables, computed from arrays of true and predicted labels."""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(true: np.ndarray, pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Counts of true (rows) x predicted (columns) classes, labelled with class names."""
    n = len(names)
    counts = np.bincount(np.asarray(true) * n + np.asarray(pred), minlength=n * n).reshape(n, n)
    index = pd.Index(names, name="true")
    return pd.DataFrame(counts, index=index, columns=pd.Index(names, name="predicted"))


def normalize(matrix: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its total: the share of each true class given each prediction."""
    return matrix.div(matrix.sum(axis=1).replace(0, np.nan), axis=0)


def per_class(matrix: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1, support, one-vs-rest accuracy and the most confused class, per true class."""
    m = matrix.to_numpy().astype(float)
    tp, support, predicted, total = np.diag(m), m.sum(axis=1), m.sum(axis=0), m.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    accuracy = (total - predicted - support + 2 * tp) / total  # (TP + TN) / N, this class against the rest
    off = m.copy()
    np.fill_diagonal(off, -1)
    confused = [matrix.columns[j] if off[i, j] > 0 else None for i, j in enumerate(off.argmax(axis=1))]
    return pd.DataFrame(
        {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support.astype(int),
            "accuracy": accuracy,
            "most_confused_with": confused,
            "confused_count": off.max(axis=1).clip(min=0).astype(int),
        },
        index=pd.Index(matrix.index, name="class"),
    )


def top_confusions(matrix: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The `n` largest off-diagonal cells: true class, predicted class, count and share of the true class."""
    pairs = matrix.stack().rename("count").reset_index()
    pairs = pairs[pairs["true"] != pairs["predicted"]]
    pairs["share_of_true"] = pairs["count"] / pairs["true"].map(matrix.sum(axis=1))
    return pairs[pairs["count"] > 0].nlargest(n, "count").reset_index(drop=True)


ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern Neural Networks")


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Reliability table: per equal-width confidence bin (lo, hi], the images, mean confidence and accuracy.

    Columns: lower, upper, count, confidence, accuracy, gap (confidence - accuracy); empty bins have count 0.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # bin i holds (i/bins, (i+1)/bins]
    count = np.bincount(index, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.bincount(index, confidence, minlength=bins) / count
        accuracy = np.bincount(index, correct, minlength=bins) / count
    edges = np.linspace(0, 1, bins + 1)
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count,
            "confidence": mean_conf,
            "accuracy": accuracy,
            "gap": mean_conf - accuracy,
        },
        index=pd.RangeIndex(bins, name="bin"),
    )


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the image-weighted mean |accuracy - confidence| over the bins."""
    table = calibration(confidence, correct, bins)
    filled = table[table["count"] > 0]
    return float((filled["count"] * filled["gap"].abs()).sum() / max(int(table["count"].sum()), 1))
