"""The weak view a dataset asks for reaches the training loaders: ``digits16`` (the demo's) is
unaugmented in the shared pipeline and in the co-divide loaders; ``digits`` keeps CIFAR's crop and
flip."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from lnl.codivide.steps import subset_loader
from lnl.engine.data import build_noisy_data
from lnl.engine.settings import DataSettings, NoiseSettings


def _data(tmp_path, dataset: str):
    settings = DataSettings(
        dataset=dataset,
        noise=NoiseSettings("sym", 0.6, seed=0),
        out=str(tmp_path / dataset),
        device="cpu",
        batch_size=64,
        seed=0,
    )
    return build_noisy_data(settings)


def _normalised(data, idx: torch.Tensor) -> torch.Tensor:
    """The training images at ``idx``, only normalised (no augmentation)."""
    images = data.train.images[idx].permute(0, 3, 1, 2).float() / 255
    return TF.normalize(images, data.train.mean, data.train.std)


def _weak_is_plain(data, loader) -> list[bool]:
    """Per image of the loader's first batch: its view equals the normalised image itself."""
    x, _, idx = next(iter(loader))
    return [torch.allclose(a, b, atol=1e-5) for a, b in zip(x, _normalised(data, idx))]


def test_digits16_trains_on_the_images_themselves(tmp_path):
    data = _data(tmp_path, "digits16")
    assert (data.train_loader.crop_padding, data.train_loader.flip) == (0, False)
    assert all(_weak_is_plain(data, data.train_loader))
    labeled = subset_loader(data.train_loader, torch.arange(200), 32, views=("weak",) * 2, seed=1)
    assert (labeled.crop_padding, labeled.flip) == (0, False)
    cut = data.train.take(torch.tensor([3, 1]))  # a --subset cut keeps the dataset's views
    assert (cut.crop_padding, cut.flip) == (0, False) and torch.equal(
        cut.targets, data.train.targets[[3, 1]]
    )
    (x1, x2), _, idx = next(iter(labeled))
    ref = _normalised(data, idx)
    assert torch.allclose(x1, ref, atol=1e-5) and torch.allclose(x2, ref, atol=1e-5)


def test_digits_keeps_cifars_crop_and_flip(tmp_path):
    data = _data(tmp_path, "digits")
    assert (data.train_loader.crop_padding, data.train_loader.flip) == (4, True)
    assert not all(_weak_is_plain(data, data.train_loader))
    labeled = subset_loader(data.train_loader, None, 32, views=("weak",), seed=1)
    assert (labeled.crop_padding, labeled.flip) == (4, True)
