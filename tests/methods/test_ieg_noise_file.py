"""IEG's ``--noise_file`` (port option): the file's labels on the train rows, the probe drawn as without it."""

from __future__ import annotations

import numpy as np

from methods.ieg import ieg_lib as L


def test_file_labels_keep_the_probe_split_and_clean_probe_rows():
    rng = np.random.RandomState(1)
    clean = np.repeat(np.arange(10), 30)
    noisy = rng.randint(0, 10, len(clean))
    name = L.DatasetName("digits", "uniform", 0.6)
    _, probe_drawn, train_drawn = L.make_ieg_labels(clean, name, 0.1, 10, seed=7)
    labels, probe, train = L.file_ieg_labels(clean, noisy, 0.1, 10, seed=7)
    assert np.array_equal(probe, probe_drawn) and np.array_equal(train, train_drawn)
    assert np.array_equal(labels[train], noisy[train]) and np.array_equal(
        labels[probe], clean[probe]
    )
    assert len(probe) == 30 and (labels[train] != clean[train]).mean() > 0.5
