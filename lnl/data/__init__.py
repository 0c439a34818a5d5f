"""lnl.data: datasets, noise models and the GPU-resident data pipeline.

* :func:`get_dataset` / :func:`list_datasets`: the dataset registry (:mod:`lnl.data.datasets`).
* :mod:`lnl.data.noise`: synthetic label-noise generators (feature-dependent ones in
  :mod:`lnl.data.noise_models`); :mod:`lnl.data.noise_files`: noise-file readers/writers.
* :mod:`lnl.data.gpu`: :class:`~lnl.data.gpu.GPULoader`, batches and augmentation on the device.
* :mod:`lnl.data.loaders`: ``DataLoader`` helpers for file-list datasets (Clothing1M subsets,
  ``DeviceLoader``).
* :mod:`lnl.data.file_views`: the PIL views of file-list datasets (crops, ``transforms_for``, ``MultiView``).
"""

from lnl.data.datasets import (
    DATA_PREP_HINT,
    DatasetNotFoundError,
    FileListDataset,
    InMemoryDataset,
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
