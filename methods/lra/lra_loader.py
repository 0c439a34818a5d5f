"""The original CIFAR loaders, batch for batch and draw for draw (``train_CIFAR.py``): a torch
``DataLoader(dataset, batch_size, shuffle, num_workers)`` over ``utils/data_utils.py: Custom_dataset``
with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize`` (training)
or ``ToTensor()``, ``Normalize`` (evaluation).

What torch does per iteration, reproduced here from the same global generator:

1. the iterator draws ``base_seed`` (one int64 from the global generator);
2. a shuffling ``RandomSampler`` draws its seed (one more int64) and permutes with ``randperm``;
3. batch b is built by worker ``b % num_workers``, whose generator was seeded ``base_seed + worker``;
   per image, ``RandomCrop`` draws the row then the column offset (``randint``), the flip a ``rand``.

So the shuffle, the crops and flips and the global generator after each epoch equal the original's
(``tests/equivalence/test_lra.py`` runs both). Images are cropped on the CPU from the uint8 array;
``--fast_loader`` uses ``lnl.data.gpu.GPULoader`` instead (augmentation on the device, its own seeded
generator: faster, other batches).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

PAD = 4


def draw_int64() -> int:
    """One int64 from the global generator, as ``torch.empty((), dtype=torch.int64).random_()``."""
    return int(torch.empty((), dtype=torch.int64).random_().item())


class OriginalLoader:
    """Yields ``(images, labels, idx)`` as the original's ``DataLoader`` would (module docstring).

    Args:
        images: ``[N, H, W, 3]`` uint8.
        labels: ``[N]`` labels (noisy for training).
        batch_size: batch size.
        mean, std: normalisation.
        device: where batches go.
        shuffle: ``RandomSampler`` (training) or index order.
        augment: the training crop and flip.
        num_workers: the original's worker count (4 for the CIFAR loaders, 16 in ``prepare_fp_x``).
        indices: the dataset rows the loader covers (the original's ``Custom_dataset`` of those rows);
            batches report dataset indices.
        drop_last: drop the last short batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device,
        shuffle: bool,
        augment: bool,
        num_workers: int = 4,
        indices: torch.Tensor | None = None,
        drop_last: bool = False,
    ):
        self.images = torch.as_tensor(images).cpu()
        self.labels = torch.as_tensor(labels).cpu()
        self.indices = (
            torch.arange(len(self.images)) if indices is None else torch.as_tensor(indices).cpu()
        )
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), bool(augment)
        self.num_workers, self.drop_last, self.device = (
            int(num_workers),
            bool(drop_last),
            torch.device(device),
        )
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        base_seed = draw_int64()
        order = torch.arange(len(self.indices))
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(draw_int64())
            order = torch.randperm(len(order), generator=g)
        workers = [
            torch.Generator().manual_seed(base_seed + w) for w in range(max(self.num_workers, 1))
        ]
        for b in range(len(self)):
            idx = self.indices[order[b * self.batch_size : (b + 1) * self.batch_size]]
            x = self.images[idx]
            if self.augment:
                x = self.crop_and_flip(x, workers[b % len(workers)] if self.num_workers else None)
            yield (
                self.normalise(x).to(self.device),
                self.labels[idx].to(self.device),
                idx.to(self.device),
            )

    @staticmethod
    def crop_and_flip(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """RandomCrop(H, padding=4) then RandomHorizontalFlip per image, drawing as torchvision does
        (row offset, column offset, then the flip); ``gen`` None: the global generator (no workers)."""
        n, h, w, _ = x.shape
        padded = F.pad(x.permute(0, 3, 1, 2), (PAD, PAD, PAD, PAD)).permute(0, 2, 3, 1)
        out = torch.empty_like(x)
        for r in range(n):
            i = int(torch.randint(0, h + 2 * PAD - h + 1, (1,), generator=gen))
            j = int(torch.randint(0, w + 2 * PAD - w + 1, (1,), generator=gen))
            crop = padded[r, i : i + h, j : j + w]
            out[r] = crop.flip(1) if bool(torch.rand(1, generator=gen) < 0.5) else crop
        return out

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """ToTensor (÷255) then Normalize ((x − mean)/std), in torchvision's float32 operations; contiguous
        NCHW as ToTensor makes it (a channels-last batch would take other convolution kernels)."""
        return (x.permute(0, 3, 1, 2).contiguous().float().div(255) - self.mean) / self.std
