"""The dataset registry facade: ``get_dataset(name, root, split)`` for every supported dataset.

Importing this module registers all loaders:

========================  ==============================  =========================================
name                      module                          kind
========================  ==============================  =========================================
``cifar10``, ``cifar100``  :mod:`lnl.data.cifar`           in memory, uint8 ``[N, 32, 32, 3]``
``cifar10n``, ``cifar100n`` :mod:`lnl.data.cifar`          in memory, CIFAR-N human labels attached
``digits``                :mod:`lnl.data.small`           in memory, embedded (scikit-learn)
``digits16``              :mod:`lnl.data.small`           the same at 16x16, unaugmented (the demo's)
``tiny_imagenet``         :mod:`lnl.data.small`           in memory, uint8 ``[N, 64, 64, 3]``
``clothing1m``            :mod:`lnl.data.webscale`        file list
``webvision``             :mod:`lnl.data.webscale`        file list (mini: first 50 classes)
``ilsvrc12_val``          :mod:`lnl.data.webscale`        file list (first 50 classes)
``food101n``, ``food101``  :mod:`lnl.data.webscale`        file list
========================  ==============================  =========================================
"""

from lnl.data import cifar, small, webscale  # noqa: F401  (imports register the loaders)
from lnl.data._base import DatasetNotFoundError, FileListDataset, InMemoryDataset
from lnl.data._registry import (
    DATA_PREP_HINT,
    dataset_info,
    get_dataset,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DATA_PREP_HINT",
    "DatasetNotFoundError",
    "FileListDataset",
    "InMemoryDataset",
    "dataset_info",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]
