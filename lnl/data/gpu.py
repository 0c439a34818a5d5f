"""GPU-resident data pipeline for in-memory datasets.

The whole uint8 dataset is copied to the device once; each batch is drawn by index and augmented per
sample in a handful of whole-batch tensor ops (cifar10-airbench's approach, style.md item 16): no
``DataLoader``, no worker processes, no per-step host-to-device copy. It runs unchanged on the CPU.

Views (one entry of ``views`` each; several views give a tuple of tensors, MixMatch-style):

* ``"weak"``: pad-crop (``crop_padding``, zero fill) + horizontal flip, as
  ``RandomCrop(H, padding) + RandomHorizontalFlip()``.
* ``"strong"``: weak + torchvision's AutoAugment CIFAR-10 policy per sample.
* ``"randaug"``: weak + torchvision's RandAugment per sample (``randaug_num_ops``,
  ``randaug_magnitude``).
* ``"none"``: normalisation only (what ``train=False`` uses).
* ``"autoaug_cifar"`` / ``"autoaug_imagenet"``: weak + PLReMix's PIL AutoAugment CIFAR / ImageNet
  policy, pixel-exact (``lnl.data.pil_augment``; PLReMix's default strong views on CIFAR and
  Tiny-ImageNet).
* ``"randaug_fixmatch"``: weak + FixMatch's RandAugment (4 ops, random values, Cutout; PLReMix's
  ``--aug randaug``).

The random parameters of ``weak`` and these views come from :meth:`GPULoader.draw` and are applied by
:meth:`GPULoader.apply`; :meth:`GPULoader.draws_like_original` draws them instead from torch's,
Python's and numpy's global generators in the order a torchvision ``Compose`` of the original draws
them, image after image (the golden tests feed both sides the same draws that way).

Determinism: the shuffle order and every augmentation draw of epoch ``e`` come from a
``torch.Generator`` seeded with a hash of ``(seed, e)``, so they are a pure function of ``(seed,
e)`` on a given device type and a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run saw. The global RNG is never used. ``set_epoch(e)`` selects the epoch; each full
iteration then advances it by one, so forgetting ``set_epoch`` still gives a new order every epoch.
CPU and CUDA generators produce different streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from lnl.data import augment as A
from lnl.data import pil_augment as P
from lnl.data.autoaugment import auto_augment, rand_augment

PIL_VIEWS = {
    "autoaug_cifar": "cifar",
    "autoaug_imagenet": "imagenet",
    "randaug_fixmatch": "randaug",
}
VIEWS = ("weak", "strong", "randaug", "none", *PIL_VIEWS)
#: Views whose parameters :meth:`GPULoader.draw` draws (and :meth:`GPULoader.apply` applies).
DRAWN_VIEWS = ("weak", *PIL_VIEWS)
#: FixMatch RandAugment's op count in PLReMix (``RandAugment(4, 6)``; the 6 is unused).
FIXMATCH_NUM_OPS = 4


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed derived from ``(seed, epoch)`` (numpy ``SeedSequence`` hashing)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class GPULoader:
    """Batches ``(images, labels, indices)`` from a uint8 dataset held on ``device``.

    Args:
        images: ``Tensor[N, H, W, 3]`` uint8 (NHWC, e.g. ``dataset.images``); moved to ``device``
            once.
        labels: ``Tensor[N]`` integer labels (e.g. noisy labels); moved to ``device``.
        batch_size: images per batch.
        mean: 3 per-channel means in [0, 1] units.
        std: 3 per-channel stds in [0, 1] units.
        device: where the data lives and the work runs.
        train: default for ``shuffle`` and ``views``.
        shuffle: reshuffle every epoch (default: ``train``).
        drop_last: drop the last incomplete batch.
        seed: base seed of the per-epoch generators.
        views: tuple of view names (module docstring); default ``("weak",)`` when ``train`` else
            ``("none",)``.
        crop_padding: padding of the random crop (0 disables it; Tiny-ImageNet's weak view uses 0).
        flip: random horizontal flips.
        dtype: output dtype (``torch.float32``, ``torch.bfloat16``, ``torch.float16``).
        channels_last: output in ``torch.channels_last`` memory format.
        indices: optional dataset indices to restrict the loader to (e.g. a labelled subset);
            batches still report dataset indices.
        fill: fill value of AutoAugment/RandAugment geometric ops (PLReMix: 128).
        randaug_num_ops: RandAugment ops per image.
        randaug_magnitude: RandAugment magnitude bin (of 31).

    Attributes:
        images: ``Tensor[N, 3, H, W]`` uint8 on ``device``, stored planar so that the crop gather reads
            whole channel rows. ``images.permute(0, 2, 3, 1)`` is an NHWC view that another
            ``GPULoader`` on the same device accepts without copying (subset loaders share it).
        labels: ``Tensor[N]`` int64 on ``device`` (replace with :meth:`set_labels`).
        indices: ``Tensor[M]`` the dataset indices the loader draws from.
        epoch: the epoch the next iteration uses.

    Yields:
        ``(images, labels, idx)``: ``images`` is ``Tensor[B, 3, H, W]`` normalised (a tuple of such
        tensors when ``len(views) > 1``), ``labels`` ``Tensor[B]`` int64 and ``idx`` ``Tensor[B]``
        int64 dataset indices, all on ``device``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        train: bool = True,
        shuffle: bool | None = None,
        drop_last: bool = False,
        seed: int = 0,
        views: Sequence[str] | None = None,
        crop_padding: int = 4,
        flip: bool = True,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        indices: Tensor | Sequence[int] | None = None,
        fill: int = 128,
        randaug_num_ops: int = 2,
        randaug_magnitude: int = 9,
    ) -> None:
        self.device = torch.device(device)
        # Stored planar (NCHW) on the device: the crop gather then reads whole channel rows.
        self.images = self._check_images(images).to(self.device).permute(0, 3, 1, 2).contiguous()
        self.labels = self._check_labels(labels, len(self.images))
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values with std > 0, got {mean}, {std}")
        self.views = tuple(views) if views is not None else (("weak",) if train else ("none",))
        bad = [v for v in self.views if v not in VIEWS]
        if bad or not self.views:
            raise ValueError(f"unknown views {bad or self.views}; valid views: {', '.join(VIEWS)}")
        if crop_padding < 0 or not dtype.is_floating_point:
            raise ValueError(
                f"need crop_padding >= 0 and a float dtype, got {crop_padding}, {dtype}"
            )
        self.batch_size, self.drop_last, self.seed = batch_size, drop_last, int(seed)
        self.shuffle = train if shuffle is None else bool(shuffle)
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_padding, self.flip, self.fill = int(crop_padding), bool(flip), int(fill)
        self.dtype, self.channels_last = dtype, channels_last
        self.randaug = (int(randaug_num_ops), int(randaug_magnitude))
        self.indices = self._check_indices(indices, len(self.images))
        self.epoch = 0

    @staticmethod
    def _check_images(images: Tensor) -> Tensor:
        """Validate ``[N, H, W, 3]`` uint8."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}"
            )
        return images

    def _check_labels(self, labels: Tensor, n: int) -> Tensor:
        """Validate ``[N]`` integer labels and move them to the device."""
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != n or labels.is_floating_point():
            raise ValueError(
                f"labels must be integer [N={n}], got {labels.dtype} {tuple(labels.shape)}"
            )
        return labels.to(device=self.device, dtype=torch.int64)

    def _check_indices(self, indices, n: int) -> Tensor:
        """Validate the optional subset of dataset indices."""
        if indices is None:
            return torch.arange(n, device=self.device)
        idx = torch.as_tensor(indices).to(torch.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(
                f"indices must lie in [0, {n}), got [{int(idx.min())}, {int(idx.max())}]"
            )
        return idx.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle order and augmentation draws the next iteration uses."""
        self.epoch = int(epoch)

    def set_labels(self, labels: Tensor) -> None:
        """Replace the labels (e.g. after label correction); same length as the dataset."""
        self.labels = self._check_labels(labels, len(self.images))

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def generator(self, epoch: int) -> torch.Generator:
        """The generator of ``epoch`` (fresh, on the loader's device)."""
        return torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[tuple[Tensor | tuple[Tensor, ...], Tensor, Tensor]]:
        g = self.generator(self.epoch)
        self.epoch += 1
        n = len(self.indices)
        if self.shuffle:
            order = self.indices[torch.randperm(n, device=self.device, generator=g)]
        else:
            order = self.indices
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = self.images.index_select(0, idx)
            views = tuple(self.transform(batch, view, g) for view in self.views)
            yield (views[0] if len(views) == 1 else views), self.labels[idx], idx

    def transform(self, batch: Tensor, view: str, generator: torch.Generator) -> Tensor:
        """Produce one view of a batch: :meth:`apply` with :meth:`draw`'s parameters.

        Args:
            batch: ``Tensor[B, 3, H, W]`` uint8 on the device.
            view: a name from :data:`VIEWS`.
            generator: random source.

        Returns:
            ``Tensor[B, 3, H, W]`` normalised, of the loader's dtype and memory format.
        """
        if view in DRAWN_VIEWS:
            return self.apply(batch, view, self.draw(batch, view, generator))
        x = batch
        if view != "none":
            x = A.random_crop_flip(batch, self.crop_padding, self.flip, generator)
            if view == "strong":
                x = auto_augment(x, generator, fill=self.fill)
            elif view == "randaug":
                x = rand_augment(x, generator, *self.randaug, fill=self.fill)
        return A.normalize(x, self.mean, self.std, self.dtype, self.channels_last)

    def draw(self, batch: Tensor, view: str, generator: torch.Generator) -> dict:
        """The random parameters of a view of :data:`DRAWN_VIEWS` for ``batch``, from ``generator``:
        crop offsets, flips, then the policy's draws (``lnl.data.pil_augment``; None for ``weak``)."""
        b, _, h, w = batch.shape
        dev, p = batch.device, self.crop_padding
        top = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        left = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
        flip = (torch.rand(b, device=dev, generator=generator) < 0.5) & self.flip
        policy = None
        if view == "randaug_fixmatch":
            policy = P.randaug_draws(b, FIXMATCH_NUM_OPS, generator, dev, w, h)
        elif view in PIL_VIEWS:
            policy = P.policy_draws(PIL_VIEWS[view], b, generator, dev)
        return {"top": top, "left": left, "flip": flip, "policy": policy}

    def draws_like_original(self, batch: Tensor, view: str) -> dict:
        """:meth:`draw`'s parameters taken as the original's ``Compose([RandomCrop(H, padding),
        RandomHorizontalFlip(), Policy])`` takes them, image after image: torch's global generator
        for the crop (only when padded) and the flip, Python's ``random`` for the policy, numpy's
        global one for the Cutout centre."""
        b, _, h, w = batch.shape
        dev, p = batch.device, self.crop_padding
        top, left, flip = [], [], []
        for _ in range(b):
            i = int(torch.randint(0, 2 * p + 1, (1,))) if p else 0
            j = int(torch.randint(0, 2 * p + 1, (1,))) if p else 0
            top.append(i), left.append(j), flip.append(bool(torch.rand(1) < 0.5) and self.flip)
        policy = None
        if view == "randaug_fixmatch":
            policy = P.randaug_draws_python(b, FIXMATCH_NUM_OPS, w, h, device=dev)
        elif view in PIL_VIEWS:
            policy = P.policy_draws_python(PIL_VIEWS[view], b, device=dev)
        as_t = lambda v: torch.tensor(v, device=dev)  # noqa: E731
        return {"top": as_t(top), "left": as_t(left), "flip": as_t(flip), "policy": policy}

    def apply(self, batch: Tensor, view: str, draws: dict) -> Tensor:
        """A view of :data:`DRAWN_VIEWS` with the given parameters: pad-crop (zero fill) and flip, the
        policy, the normalisation."""
        x = A.crop_flip(batch, draws["top"], draws["left"], draws["flip"], self.crop_padding)
        if view == "randaug_fixmatch":
            x = P.rand_augment(x, draws["policy"])
        elif view in PIL_VIEWS:
            x = P.auto_augment(x, PIL_VIEWS[view], draws["policy"], fill=self.fill)
        return A.normalize(x, self.mean, self.std, self.dtype, self.channels_last)

    def __repr__(self) -> str:
        return (
            f"GPULoader(n={len(self.indices)}, batch_size={self.batch_size}, views={self.views}, "
            f"shuffle={self.shuffle}, device={self.device}, epoch={self.epoch})"
        )
