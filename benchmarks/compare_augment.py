"""Issue 28's search for why the fast path trails stock: do the two loaders augment alike? Stock's
`classify_augmentations` (per PIL image, as Ultralytics' ClassificationDataset calls it) against the fast path's
batched `Augment`, on the same training images with the same train arguments (the default recipe's unless given).

    python benchmarks/compare_augment.py [--images 4000] [--seed 0] [--per-op] [--weights PT] [key=value ...]

Prints, for per-image statistics of the augmented 32-px images (mean, standard deviation, share of black pixels:
below half a grey level, share above mid-grey), each loader's mean and spread and their difference in standard
errors. The two draw different random numbers, so single images differ; the distributions should not (|difference|
of a few standard errors at most). --weights adds the statistic a model sees: that checkpoint's loss (eval mode,
cross-entropy) on each image, which a harder or easier augmentation moves even where pixel statistics agree.
--per-op compares each RandAugment operation at bin 9, both signs, on the same 32-px images: torchvision's operation
on the PIL image (what stock calls) against `training/randaugment.py`'s, image by image.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from fmnist_yolo.config import TREE


def per_image(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, H, W) images in [0, 1] -> one value per image for each statistic. Black is below half a grey level: stock's
    images are 8-bit (PIL), the fast path's floats, where an interpolated background pixel can be 1e-3 grey levels."""
    x = x.flatten(1)
    return {
        "mean": x.mean(1),
        "std": x.std(1),
        "black": (x < 0.5 / 255).float().mean(1),
        "above 0.5": (x > 0.5).float().mean(1),
    }


def model_loss(model, x: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """(N, H, W) images in [0, 1] of these class folders -> an eval-mode classifier's cross-entropy on each (grey as
    three channels)."""
    index = {name: i for i, name in model.names.items()}
    labels = torch.tensor([index[c] for c in classes])
    out = []
    with torch.no_grad():
        for xs, ys in zip(x.split(500), labels.split(500)):
            p = model(xs[:, None].expand(-1, 3, -1, -1).contiguous())  # eval mode: softmax probabilities
            p = p[0] if isinstance(p, (tuple, list)) else p
            out.append(-p.gather(1, ys[:, None]).clamp(min=1e-12).log()[:, 0])
    return torch.cat(out)


def per_op(images: list[np.ndarray]) -> None:
    """Each RandAugment operation as stock applies it (torchvision on PIL, bilinear, fill 0) against the fast path's,
    on the same images: mean and largest absolute difference in grey levels, and the share of black pixels."""
    import cv2
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode, RandAugment
    from torchvision.transforms.autoaugment import _apply_op

    from fmnist_yolo.training.randaugment import MAGNITUDE, OPS, rand_augment

    small = [cv2.resize(im, (32, 32), interpolation=cv2.INTER_LINEAR) for im in images]
    x = torch.from_numpy(np.stack(small))[:, None].float() / 255
    space = RandAugment()._augmentation_space(31, (32, 32))
    print("| operation | sign | mean abs. difference (grey levels) | largest | black: stock | black: fast |")
    print("|---|---|---|---|---|---|")
    for sign in (1, -1):
        for i, op in enumerate(OPS):
            magnitudes, signed = space[op]
            if sign < 0 and not signed:
                continue
            m = sign * float(magnitudes[MAGNITUDE]) if magnitudes.ndim > 0 else 0.0
            pil = [
                _apply_op(Image.fromarray(im).convert("RGB"), op, m, InterpolationMode.BILINEAR, None) for im in small
            ]
            stock = torch.stack([TF.pil_to_tensor(im)[0] for im in pil]).float() / 255
            ops, signs = torch.tensor([[i, 0]] * len(small)), torch.full((len(small), 2), float(sign))
            fast = rand_augment(x, ops, signs)[:, 0]
            d = (fast - stock).abs() * 255
            s_black, f_black = per_image(stock)["black"].mean(), per_image(fast)["black"].mean()
            print(f"| {op} | {sign:+d} | {d.mean():.3f} | {d.max():.0f} | {s_black:.4f} | {f_black:.4f} |")


def main() -> None:
    import cv2
    from PIL import Image
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset

    from fmnist_yolo.cli import parse_overrides
    from fmnist_yolo.training.fast.augment import Augment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000, help="training images sampled (default 4000)")
    ap.add_argument("--seed", type=int, default=0, help="the sample's and both loaders' seed")
    ap.add_argument("--per-op", action="store_true", help="each RandAugment operation, stock's against the fast path's")
    ap.add_argument("--weights", help="also a checkpoint's loss on each loader's augmented images (eval mode)")
    ap.add_argument("overrides", nargs="*", help="train arguments, key=value (default: the default recipe's)")
    a = ap.parse_args()
    args = get_cfg(overrides={"imgsz": 32, **parse_overrides(a.overrides)})
    files = sorted((TREE / "train").glob("*/*.png"))
    random.Random(a.seed).shuffle(files)
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files[: a.images]]
    if a.per_op:
        return per_op(images)
    # the transform Ultralytics' own training dataset builds from these arguments, not a copy of its call
    stock_transform = ClassificationDataset(str(TREE / "train"), args, augment=True, prefix="train").torch_transforms
    torch.manual_seed(a.seed)
    rgb = (Image.fromarray(cv2.cvtColor(im, cv2.COLOR_GRAY2RGB)) for im in images)
    stock = torch.stack([stock_transform(im)[0] for im in rgb])  # grey: the three channels are equal
    fast = Augment.from_args(args)(torch.from_numpy(np.stack(images)), torch.Generator().manual_seed(a.seed))[:, 0]
    print(f"{len(images)} training images, {args.imgsz} px, auto_augment={args.auto_augment}, "
          f"scale={args.scale}, erasing={args.erasing}, fliplr={args.fliplr}")  # fmt: skip
    print("| statistic | stock | fast | difference / standard error |\n|---|---|---|---|")
    stats = [per_image(stock), per_image(fast)]
    if a.weights:
        from ultralytics import YOLO

        model, classes = YOLO(a.weights).model.float().eval(), [f.parent.name for f in files[: a.images]]
        for x, st in zip((stock, fast), stats):
            st["loss of --weights"] = model_loss(model, x, classes)
    for (name, s), f in zip(stats[0].items(), stats[1].values()):
        se = float(((s.var() + f.var()) / len(s)).sqrt())
        print(f"| {name} | {s.mean():.4f} ± {s.std():.4f} | {f.mean():.4f} ± {f.std():.4f} | "
              f"{(f.mean() - s.mean()) / se:+.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
