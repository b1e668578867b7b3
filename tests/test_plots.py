"""The report's figures are PNGs drawn offline."""

import numpy as np
import pandas as pd
from PIL import Image

from fmnist_yolo.analysis import plots
from fmnist_yolo.evaluation import metrics


def test_reliability_diagram_and_learning_curves(tmp_path):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1, 500)
    table = metrics.calibration(conf, rng.uniform(0, 1, 500) < conf)
    path = plots.reliability_diagram(table, tmp_path / "r.png", metrics.ece(conf, conf > 0.5))
    history = pd.DataFrame({"train_loss": [2.0, 1.0], "val_loss": [1.5, 1.1], "val_top1": [0.5, 0.7],
                            "val_top5": [0.9, 0.95], "lr_pg0": [0.01, 0.005]}, index=[1, 2])  # fmt: skip
    curves = plots.learning_curves(history, tmp_path / "c.png", best_epoch=2)
    for p in (path, curves):
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 200
