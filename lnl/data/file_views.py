"""The PIL views of file-list datasets (Clothing1M, WebVision) in DivideMix and PLReMix: each
original's crop sizes, its weak/strong/val/multi-crop transforms (PIL in, normalised tensor out) and
``MultiView``, which draws several views of one image (PLReMix ``datasets/``, DivideMix ``dataloader_clothing1M.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Crops:
    """Image sizes of one dataset's views."""

    resize: int  # Resize before the crops
    crop: int  # RandomCrop / CenterCrop size
    mcrop_large: tuple[int, float, float]  # (size, scale_min, scale_max) of the 2 large crops
    mcrop_small: tuple[int, float, float]  # same for the 6 small crops
    random_resized_crop: bool = False  # DivideMix WebVision's train crop (d9d3058)


CLOTHING1M_CROPS = Crops(256, 224, (196, 0.7, 1.0), (120, 0.4, 0.7))
WEBVISION_CROPS = Crops(320, 299, (224, 0.14, 1.0), (128, 0.05, 0.14))


def transforms_for(
    crops: Crops, mean: Sequence[float], std: Sequence[float], aug: str = "autoaug"
) -> dict[str, Callable]:
    """``weak``, ``strong`` (+ the ``aug`` policy), ``val``, ``large`` and ``small`` crops (PIL in,
    normalised tensor out), as torchvision transforms.

    ``aug``: ``"autoaug"`` PLReMix's ImageNet AutoAugment policy, ``"randaug"`` FixMatch's RandAugment
    (4 ops), ``"train"`` none (PLReMix's ``data/data_loader.py``); both policies are pixel-exact ports
    (``lnl.data.pil_augment.PILPolicy``) that draw from Python's ``random`` in the original's order.
    """
    import torchvision.transforms as T

    from lnl.data.pil_augment import PILPolicy

    policies = {"autoaug": [PILPolicy("imagenet")], "randaug": [PILPolicy("randaug")], "train": []}
    if aug not in policies:
        raise ValueError(
            f"--aug {aug}: file-list datasets provide {sorted(policies)} (simclr's colour "
            "jitter/blur is not implemented)"
        )
    policy = policies[aug]
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    crop = (
        T.RandomResizedCrop(crops.crop) if crops.random_resized_crop else T.RandomCrop(crops.crop)
    )
    base = [T.Resize(crops.resize), crop, T.RandomHorizontalFlip()]

    def rrc(size, lo, hi):
        return T.Compose(
            [T.RandomResizedCrop(size, scale=(lo, hi)), T.RandomHorizontalFlip(), *policy, *norm]
        )

    return {
        "weak": T.Compose(base + norm),
        "strong": T.Compose(base + policy + norm),
        "val": T.Compose([T.Resize(crops.resize), T.CenterCrop(crops.crop)] + norm),
        "large": rrc(*crops.mcrop_large),
        "small": rrc(*crops.mcrop_small),
    }


class MultiView:
    """A transform returning a tuple of views, each drawn independently.

    Args:
        tf: ``transforms_for`` output.
        names: e.g. ``("weak", "weak", "strong", "strong")`` or ``("large", "large", "large", "small", ...)``.
    """

    def __init__(self, tf: dict[str, Callable], names: Sequence[str]):
        self.tf, self.names = tf, tuple(names)

    def __call__(self, img):
        out = tuple(self.tf[name](img) for name in self.names)
        return out if len(out) > 1 else out[0]
