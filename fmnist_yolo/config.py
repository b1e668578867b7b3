"""The single source of fmnist-yolo's defaults and the Fashion-MNIST facts it relies on.

Paths are relative to the current directory, like Ultralytics' own `runs/`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# Label order of the official release; folder names sort in this order because of the digit prefix,
# and Ultralytics numbers classes by plain string sort of the folder names.
CLASS_NAMES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
CLASS_DIRS = tuple(f"{i}_{name}" for i, name in enumerate(CLASS_NAMES))

# The four official files: key -> (file name without .gz, official .gz MD5, SHA-256 of the IDX payload).
# Recompressed copies (Debian's dataset-fashion-mnist) differ in the MD5 and agree in the payload hash.
SOURCE_FILES = {
    "train_images": ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}  # fmt: skip
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
SOURCE_ENV = "FMNIST_SOURCE"  # environment variable naming a source directory


@dataclass(frozen=True)
class Config:
    """Defaults for every entry point; `key=value` overrides, keyword arguments and cfg= YAML replace them."""

    # --- data preparation ---
    out: Path = Path("datasets/fashion-mnist")  # the prepared class-folder tree (`data=` default for training)
    raw_dir: Path = Path("datasets/raw/fashion-mnist")  # project copy of the IDX files; downloads land here
    val: int = 5000  # stratified, seeded hold-out from the 60k train images (500/class); 0 = Ultralytics' train/test
    seed: int = 0  # seed of the val hold-out
    verify: bool = True  # check source files against the official checksums
    # --- training (everything else is Ultralytics' own default) ---
    model: str = "yolo11n-cls.pt"  # weights or model YAML; falls back to the YAML offline (recorded)
    epochs: int = 100  # the Ultralytics Fashion-MNIST recipe
    imgsz: int = 28  # requested size; Ultralytics rounds it up to the stride (32) and we record both
    strict_weights: bool = False  # True: missing pretrained weights is an error, not a from-scratch fallback
    recipe: str = "default"  # a shipped recipe (fmnist_yolo/recipes/NAME.yaml) or a YAML path; see `fmnist-yolo recipes`
    fast: bool = False  # in-memory data path with batched augmentation on the training device (fmnist_yolo.memory)
    evaluate_test: bool = True  # evaluate best.pt once on test after training (off for sweeps: keep test unseen)
    select_on: str = "top1_top5"  # best.pt = the epoch with the best val "top1_top5" (Ultralytics' mean) or "top1"

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some fields changed."""
        return Config(**{**asdict(self), **changes})


DEFAULTS = Config()
TRAIN_KEYS = ("model", "epochs", "imgsz", "strict_weights", "fast", "evaluate_test", "select_on")  # Config fields: train arguments
OWN_TRAIN_KEYS = frozenset({"strict_weights", "recipe", "fast", "evaluate_test", "select_on"})  # train keys fmnist-yolo adds to Ultralytics'
RECIPES_DIR = Path(__file__).parent / "recipes"  # shipped recipes: YAML files of train arguments
CONFIG_FIELDS = tuple(f.name for f in fields(Config))
