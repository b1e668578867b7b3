"""Ultralytics' classification augmentation as one batched tensor operation, its random draws made per image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..randaugment import NUM_OPS, OPS, rand_augment

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before it falls back to a centre crop
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect-ratio range, which Ultralytics keeps


def _first_fit(area: torch.Tensor, log_ratio: torch.Tensor, fits) -> tuple[torch.Tensor, ...]:
    """torchvision's box sampling loop for every image at once. From (B, CROP_ATTEMPTS) draws of area (pixels) and
    log aspect ratio, the sides round(sqrt(area * ratio)) and round(sqrt(area / ratio)) of each image's first box that
    `fits`, and whether one did."""
    ratio = torch.exp(log_ratio)
    a, b = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))  # half to even, as round()
    ok = fits(a, b)
    first = ok.float().argmax(1, keepdim=True)  # argmax finds the first True
    return a.gather(1, first)[:, 0], b.gather(1, first)[:, 0], ok.any(1)


@dataclass
class Augment:
    """Batched training augmentation: Ultralytics' classify_augmentations on grey images, as a tensor operation.

    In stock's order: RandomResizedCrop (torchvision's sampler: integer boxes of area in [1 - scale, 1] and aspect in
    [3/4, 4/3], the first of 10 that fits, else the centre crop), horizontal/vertical flips, RandAugment where
    `auto_augment=randaugment` (stock's default; see randaugment.py), brightness and contrast jitter of +-hsv_v only
    where stock applies ColorJitter (auto_augment off: stock disables it under RandAugment/AutoAugment/AugMix; hue and
    saturation are no-ops on grey), random erasing to 0 (area 2-33 %, aspect 0.3-3.3, torchvision's RandomErasing
    sampler). Not reproduced: the AugMix and AutoAugment policies. Like stock, `translate` does nothing here
    (classify_augmentations has no shift)."""

    size: int
    scale: float = 0.5
    fliplr: float = 0.5
    flipud: float = 0.0
    hsv_v: float = 0.0
    erasing: float = 0.4
    randaugment: bool = False

    @classmethod
    def from_args(cls, args) -> Augment:
        """The augmentation stock Ultralytics would apply for these train arguments (less AugMix and AutoAugment)."""
        jitter = 0.0 if args.auto_augment else float(args.hsv_v)  # stock: no ColorJitter with an auto_augment policy
        return cls(int(args.imgsz), float(args.scale), float(args.fliplr), float(args.flipud), jitter,
                   float(args.erasing), args.auto_augment == "randaugment")  # fmt: skip

    def draw(self, n: int, g: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Every random choice for `n` images, one row each: slices of it augment any batching of the same images
        identically (an epoch's images do not depend on how its micro-batches are fused)."""

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=device) * (hi - lo) + lo

        def tries(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, CROP_ATTEMPTS, generator=g, device=device) * (hi - lo) + lo

        r = {
            "area": tries(1 - self.scale, 1.0), "log_ratio": tries(*map(math.log, CROP_RATIO)),
            "cx": uniform(0, 1), "cy": uniform(0, 1), "fliplr": uniform(0, 1), "flipud": uniform(0, 1),
            "contrast": uniform(1 - self.hsv_v, 1 + self.hsv_v), "brightness": uniform(1 - self.hsv_v, 1 + self.hsv_v),
            "e_area": tries(0.02, 0.33), "e_log_ratio": tries(math.log(0.3), math.log(3.3)),
            "e_y": uniform(0, 1), "e_x": uniform(0, 1), "e_on": uniform(0, 1),
        }  # fmt: skip
        if self.randaugment:  # drawn last and only when on: without it an epoch's draws are what they always were
            op = torch.rand(n, NUM_OPS, generator=g, device=device)
            r["ra_op"] = (op * len(OPS)).long().clamp(max=len(OPS) - 1)  # each of the 14 operations alike
            r["ra_sign"] = torch.where(torch.rand(n, NUM_OPS, generator=g, device=device) < 0.5, -1.0, 1.0)
        return r

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 1, size, size) float in [0, 1], random choices drawn from `g`."""
        return self.apply(x, self.draw(len(x), g, x.device))

    @staticmethod
    def crop_boxes(r: dict[str, torch.Tensor], height: int, width: int) -> tuple[torch.Tensor, ...]:
        """torchvision's RandomResizedCrop.get_params for every image at once: (top, left, h, w) in pixels.

        Each image's first box (of CROP_ATTEMPTS) whose rounded sides fit, at a uniform integer position; none
        fits: the centre crop of the largest box within the ratio range.
        """
        w, h, found = _first_fit(r["area"] * (height * width), r["log_ratio"],
                                 lambda w, h: (w > 0) & (w <= width) & (h > 0) & (h <= height))  # fmt: skip
        if width / height < CROP_RATIO[0]:
            fw, fh = width, round(width / CROP_RATIO[0])
        elif width / height > CROP_RATIO[1]:
            fw, fh = round(height * CROP_RATIO[1]), height
        else:
            fw, fh = width, height
        w, h = torch.where(found, w, float(fw)), torch.where(found, h, float(fh))
        top = torch.where(found, torch.floor(r["cy"] * (height - h + 1)), float((height - fh) // 2))
        left = torch.where(found, torch.floor(r["cx"] * (width - w + 1)), float((width - fw) // 2))
        return top, left, h, w

    @staticmethod
    def erase_boxes(r: dict[str, torch.Tensor], size: int) -> tuple[torch.Tensor, ...]:
        """torchvision's RandomErasing.get_params for every image at once: (top, left, h, w) in pixels of the
        `size`-pixel output; the first of CROP_ATTEMPTS boxes (area 2-33 %, aspect 0.3-3.3) smaller than the image,
        an empty box when none is."""
        h, w, found = _first_fit(r["e_area"] * size**2, r["e_log_ratio"], lambda h, w: (h < size) & (w < size))
        h, w = torch.where(found, h, 0.0), torch.where(found, w, 0.0)
        return torch.floor(r["e_y"] * (size - h + 1)), torch.floor(r["e_x"] * (size - w + 1)), h, w

    def apply(self, x: torch.Tensor, r: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 1, size, size) float in [0, 1], with the random choices `r` (see draw)."""
        b, dev, height, width = len(x), x.device, x.shape[-2], x.shape[-1]
        x = x[:, None].float() / 255
        top, left, h, w = self.crop_boxes(r, height, width)

        def norm(px: torch.Tensor, side: int) -> torch.Tensor:  # pixel coordinate (0 = the first edge) -> [-1, 1]
            return 2 * px / side - 1

        sx = torch.where(r["fliplr"] < self.fliplr, -w / width, w / width)  # the box's half-sides in [-1, 1] units
        sy = torch.where(r["flipud"] < self.flipud, -h / height, h / height)
        cx, cy = norm(left + w / 2, width), norm(top + h / 2, height)  # and its centre
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, self.size, self.size], align_corners=False)
        # Crop, then resize: samples beyond the box's outer pixel centres take the edge pixel (stock resizes the
        # cropped image alone), not the neighbours outside the box or the zeros outside the image.
        lo = torch.stack([norm(left + 0.5, width), norm(top + 0.5, height)], 1).view(b, 1, 1, 2)
        hi = torch.stack([norm(left + w - 0.5, width), norm(top + h - 0.5, height)], 1).view(b, 1, 1, 2)
        grid = torch.maximum(torch.minimum(grid, hi), lo)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.randaugment:
            x = rand_augment(x, r["ra_op"], r["ra_sign"])
        if self.hsv_v:
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (((x - mean) * r["contrast"].view(b, 1, 1, 1) + mean) * r["brightness"].view(b, 1, 1, 1)).clamp(0, 1)
        if self.erasing:
            y0, x0, eh, ew = self.erase_boxes(r, self.size)
            on = r["e_on"] < self.erasing
            rows = torch.arange(self.size, device=dev).view(1, -1, 1)
            cols = torch.arange(self.size, device=dev).view(1, 1, -1)
            box = ((rows >= y0.view(-1, 1, 1)) & (rows < (y0 + eh).view(-1, 1, 1))
                   & (cols >= x0.view(-1, 1, 1)) & (cols < (x0 + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))  # fmt: skip
            x = x.masked_fill(box[:, None], 0.0)
        return x
