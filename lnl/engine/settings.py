"""Typed settings the library takes instead of an entry point's argparse namespace.

Entry points parse flags named as the originals name them (``--noise_mode``, ``--r``, ``--noise_file``,
...); ``from_args`` turns them into a frozen :class:`NoiseSettings` (which noisy labels) or
:class:`DataSettings` (which data, how it is batched, where the labels are saved). Bad values fail
there, before any data is read, with a message naming the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lnl.data.noise import NOISE_TYPES
from lnl.data.noise_checks import check_rate


@dataclass(frozen=True)
class NoiseSettings:
    """The noisy labels of a run: ``file`` when given, else noise ``mode`` at ``rate`` drawn with ``seed``.

    Attributes:
        mode: a noise type of :func:`lnl.data.noise.make_noise` (``--noise_mode``).
        rate: its rate in [0, 1] (``--r``).
        seed: the generator's seed (``--seed``).
        file: a noise file (``--noise_file``; DivideMix JSON, LRA ``.npy``, lnl ``.npz``) or None.
    """

    mode: str = "sym"
    rate: float = 0.5
    seed: int = 0
    file: str | None = None

    def __post_init__(self) -> None:
        if self.file is not None:
            return  # the file's labels are read as they are: mode and rate go unused
        if self.mode not in NOISE_TYPES:
            raise ValueError(
                f"--noise_mode {self.mode!r} is not a noise type; valid: {', '.join(NOISE_TYPES)}"
            )
        check_rate(self.rate, "--r (the noise rate)")

    @property
    def name(self) -> str:
        """A short name of the setting, e.g. ``sym0.4`` or the noise file's stem."""
        return Path(self.file).stem if self.file else f"{self.mode}{self.rate:g}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NoiseSettings:
        """From ``--noise_mode``, ``--r``, ``--seed`` and ``--noise_file`` (an empty path means none;
        entry points without the last two, such as a new method's first draft, get seed 0 and none)."""
        return cls(
            mode=args.noise_mode,
            rate=args.r,
            seed=getattr(args, "seed", 0),
            file=getattr(args, "noise_file", None) or None,
        )


@dataclass(frozen=True)
class DataSettings:
    """A run's data: ``dataset`` read from ``data_path``, its noisy labels, the loaders' batch size,
    device and seed, the first ``subset`` images only (``--subset N``) and the run folder ``out``
    (``noisy_labels.npz`` is written there)."""

    dataset: str
    noise: NoiseSettings
    out: str | Path
    data_path: str | None = None
    device: str = "cpu"
    batch_size: int = 128
    seed: int = 0
    subset: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"--batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"--subset must be an integer >= 1, got {self.subset!r}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DataSettings:
        """From ``--dataset``, ``--data_path``, ``--out``, ``--device``, ``--batch_size``, ``--seed``,
        ``--subset`` and the noise flags (:meth:`NoiseSettings.from_args`)."""
        return cls(
            dataset=args.dataset,
            noise=NoiseSettings.from_args(args),
            out=args.out,
            data_path=args.data_path,
            device=args.device,
            batch_size=args.batch_size,
            seed=args.seed,
            subset=args.subset,
        )
