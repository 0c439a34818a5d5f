"""``Recipe``: one DivideMix or PLReMix per-dataset script as data, the original's flag defaults and
the values it hard-codes. Each method's shared parser and ``main`` read it, and each entry point is a
recipe plus those two (LRA's pattern, ``methods/lra/lra_train.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lnl.data.file_views import Crops


@dataclass(frozen=True)
class Recipe:
    """One original script's defaults, including the values it hard-codes."""

    title: str  # the parser's description
    dataset: str  # --dataset's default
    datasets: tuple[str, ...]  # --dataset's choices
    num_classes: int
    data_path: str | None
    backbone: str  # the two nets' model
    batch_size: int
    lr: float
    weight_decay: float
    num_epochs: int  # epochs 0..num_epochs inclusive
    alpha: float
    lambda_u: float
    # --warm_up's default (None: ``warm_up_epochs`` of the dataset)
    warm_up: int | None = None
    # warm-up per --dataset when --warm_up is None
    warm_up_epochs: Mapping[str, int] = field(default_factory=dict)
    # file-list scripts: LR ÷10 at each (in-memory: --lr_milestone)
    milestones: tuple[int, ...] = ()
    # NegEntropy in the warm-up (None: for asym noise only)
    penalty: bool | None = None
    # file-list views (None: an in-memory dataset)
    crops: Crops | None = None
    # class-balanced warm-up subset drawn each epoch (None: all samples)
    warmup_samples: int | None = None
    # class-balanced evaluation subset per net (None: all samples)
    eval_samples: int | None = None
    # "test" (the test split every epoch), "webvision" (WebVision and ILSVRC12 val top-1/5 every
    # epoch), "val_last" (val every epoch, the last epoch's nets tested), "val_best" (val every
    # epoch, each net's best-val weights tested)
    evaluation: str = "test"
    # ImageNet weights for the backbone by default
    pretrained: bool = False
    # DivideMix Clothing1M: MixMatch forwards the labeled mixed rows only, no L_u
    labeled_only: bool = False
    # defaults of the method's own per-script flags
    flags: Mapping[str, Any] = field(default_factory=dict)

    @property
    def file_list(self) -> bool:
        """A file-list dataset (decoded by ``DataLoader`` workers) rather than an in-memory one."""
        return self.crops is not None
