"""The single source of fmnist-yolo's defaults and the Fashion-MNIST facts it relies on.

Paths are relative to the current directory, like Ultralytics' own `runs/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


RUNS_DIR = Path("runs")  # the project's runs, whatever Ultralytics' own runs_dir setting says
WEIGHTS_DIR = Path("weights")  # the project's pretrained weights, looked up before Ultralytics' weights_dir
RECIPES_DIR = Path(__file__).parent / "training" / "recipes"  # shipped recipes: YAML files of train arguments
DEFAULT_RECIPE = "default"  # the Ultralytics recipe; its file is the one source of model, epochs and imgsz


@dataclass(frozen=True)
class Config:
    """fmnist-yolo's own defaults. The training recipe itself (model, epochs, imgsz) lives in the default recipe's
    YAML file and everything else is Ultralytics' default; `key=value` overrides, keyword arguments, recipe and
    cfg= files replace them."""

    # --- data preparation ---
    out: Path = Path("datasets/fashion-mnist")  # the prepared class-folder tree (`data=` default for training)
    raw_dir: Path = Path("datasets/raw/fashion-mnist")  # project copy of the IDX files; downloads land here
    val_size: int = 5000  # stratified hold-out from the 60k train images (500/class); 0 = Ultralytics' train/test
    split_seed: int = 0  # seed of the val hold-out (not Ultralytics' training `seed`)
    verify: bool = True  # check source files against the official checksums
    # --- training: the keys fmnist-yolo adds to Ultralytics' ---
    recipe: str = DEFAULT_RECIPE  # a shipped recipe (`fmnist-yolo recipes`) or a recipe YAML path
    strict_weights: bool = False  # True: missing pretrained weights is an error, not a from-scratch fallback
    fast: bool = False  # the in-memory data path with batched augmentation on the device (fmnist_yolo.training.fast)
    fused_bn: bool = False  # fast=True only: BatchNorm over each fused chunk, not per micro-batch as stock (faster)
    evaluate_test: bool = True  # evaluate best.pt once on test after training (off for sweeps: keep test unseen)
    select_on: str = "top1_top5"  # best.pt = the epoch with the best val "top1_top5" (Ultralytics' mean) or "top1"
    mlflow: bool | None = None  # None: track when mlflow is installed and Ultralytics' setting allows


DEFAULTS = Config()
OWN_TRAIN_KEYS = (
    "recipe",
    "strict_weights",
    "fast",
    "fused_bn",
    "evaluate_test",
    "select_on",
    "mlflow",
)  # train keys Ultralytics lacks
