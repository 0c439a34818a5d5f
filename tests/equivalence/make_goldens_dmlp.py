"""Golden outputs of DMLP's original (yuanpengtu/DMLP @ ba9795c, one script ``DMLP.py``) on a small
fixed feature set: every IPC step (label gradients, labels after each epoch), every EAC step (head
parameters), the label exchange of the last epoch, the test predictions and the final labels.

    python tests/equivalence/make_goldens_dmlp.py --original /path/to/DMLP

The script has no functions: it is executed whole, on the CPU (``_golden.cpu_only``), in a temporary
folder holding the files it reads (``./labels_cifar10/symmetric20/*.npy``, built by :func:`inputs`).
Patch: its module constants ``train_num``, ``val_num``, ``test_num``, ``batchsize``, ``batchsize_fc``,
``epoch`` and ``epoch_T`` are replaced by the small values of ``CONSTANTS`` (one line each, text
substitution of ``name=value``); nothing else changes. The batch sizes do not divide the data (230
noisy-set rows in IPC batches of 70, EAC mini-batches of 30), so the original's floored loops show:
the last 20 rows never get an IPC step and 10 rows of each batch never reach EAC. ``epoch_T`` = 4 with
5 epochs makes the exchange guard (``i % T == 0 and i != 0 and i == epoch - 1``) fire once, and the
EAC learning rate drops after epoch 3. Adam is wrapped at run time to record each step (a post-step
hook), and ``torch.manual_seed(SEED)`` fixes the split and the heads' initialisation, which the
fixture stores for the port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence._golden import FIXTURES, cpu_only, det_array, git_commit, save_golden  # noqa: E402

ORIGINAL = "yuanpengtu/DMLP"
COMMIT = "ba9795cc9800628ccf3446efd22b791713c45d78"
SEED = 0
CONSTANTS = {
    "train_num": 230,
    "val_num": 40,
    "test_num": 60,
    "batchsize": 70,
    "batchsize_fc": 30,
    "epoch": 5,
    "epoch_T": 4,
}
NUM_CLASSES, DIM = 10, 12  # the script's num_classes; the feature width
LABEL_FILE_ROWS = 50000  # the script counts noise over range(50000) of trainlabels/correctlabels


def inputs() -> dict[str, np.ndarray]:
    """Class-clustered features, clean labels, 30 % symmetric noisy labels and a test split."""
    n = CONSTANTS["train_num"] + CONSTANTS["val_num"]
    t = CONSTANTS["test_num"]
    centres = det_array((NUM_CLASSES, DIM), SEED, "centres", scale=2.0)
    clean = det_array((n,), SEED, "clean", kind="int", high=NUM_CLASSES)
    test_labels = det_array((t,), SEED, "test_labels", kind="int", high=NUM_CLASSES)
    flip = det_array((n,), SEED, "flip", kind="uniform") < 0.3
    other = det_array((n,), SEED, "other", kind="int", high=NUM_CLASSES)
    return {
        "train": centres[clean] + det_array((n, DIM), SEED, "train_noise"),
        "test": centres[test_labels] + det_array((t, DIM), SEED, "test_noise"),
        "clean": clean,
        "noisy": np.where(flip, other, clean),
        "test_labels": test_labels,
    }


def write_original_files(folder: Path, data: dict[str, np.ndarray]) -> None:
    """The script's ``path`` folder; label files padded to 50,000 rows (only its noise print reads them)."""
    folder.mkdir(parents=True)
    pad = lambda a: np.concatenate([a, np.zeros(LABEL_FILE_ROWS - len(a), a.dtype)])  # noqa: E731
    np.save(folder / "trainfeatures.npy", data["train"])
    np.save(folder / "testfeatures.npy", data["test"])
    np.save(folder / "trainlabels.npy", pad(data["noisy"]))
    np.save(folder / "correctlabels.npy", pad(data["clean"]))
    np.save(folder / "testlabels.npy", data["test_labels"])


def patched_source(original: Path) -> str:
    src = (original / "DMLP.py").read_text()
    for name, value in CONSTANTS.items():
        src, count = re.subn(rf"^{name}=\d+", f"{name}={value}", src, flags=re.M)
        assert count == 1, f"DMLP.py: constant {name} not found once"
    return src


@contextlib.contextmanager
def recording_adam(records: list):
    """``torch.optim.Adam`` records, per optimiser in creation order, its initial parameters and each
    step's gradients and updated parameters."""
    base = torch.optim.Adam

    class Recording(base):
        def __init__(self, params, *a, **k):
            super().__init__(params, *a, **k)
            rec = {
                "init": [p.detach().clone() for g in self.param_groups for p in g["params"]],
                "grads": [],
                "params": [],
            }
            records.append(rec)

            def hook(opt, _args, _kwargs):
                ps = [p for g in opt.param_groups for p in g["params"]]
                rec["grads"].append([p.grad.detach().clone() for p in ps])
                rec["params"].append([p.detach().clone() for p in ps])

            self.register_step_post_hook(hook)

    torch.optim.Adam = Recording
    try:
        yield
    finally:
        torch.optim.Adam = base


def run_original(original: Path) -> tuple[dict, list]:
    data = inputs()
    src = patched_source(original)
    records: list = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        write_original_files(Path(tmp) / "labels_cifar10" / "symmetric20", data)
        os.chdir(tmp)
        try:
            torch.manual_seed(SEED)
            ns = {"__name__": "__main__"}
            with cpu_only(), recording_adam(records):
                exec(compile(src, str(original / "DMLP.py"), "exec"), ns)
        finally:
            os.chdir(cwd)
    return ns, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, type=Path, help="checkout of yuanpengtu/DMLP")
    root = ap.parse_args().original
    torch.set_num_threads(1)
    ns, rec = run_original(root)
    labels_v2, labels_v1, head_v2, head_v1 = rec  # the script's creation order
    per_epoch = len(labels_v1["params"]) // CONSTANTS["epoch"]
    meta = dict(original=ORIGINAL, commit=git_commit(root, COMMIT), generator=Path(__file__).name)
    out = FIXTURES / "dmlp"
    save_golden(
        out / "split.npz",
        **meta,
        idx_to_train=ns["idx_to_train"],
        idx_to_meta=ns["idx_to_meta"],
        head_v1_weight=head_v1["init"][0],
        head_v1_bias=head_v1["init"][1],
        head_v2_weight=head_v2["init"][0],
        head_v2_bias=head_v2["init"][1],
    )
    save_golden(
        out / "ipc.npz",
        **meta,
        grads_v1_epoch0=torch.stack([g[0] for g in labels_v1["grads"][:per_epoch]]),
        labels_v1_after_step0=labels_v1["params"][0][0],
        labels_v1_after_ipc=torch.stack(
            [
                labels_v1["params"][k][0]
                for k in range(per_epoch - 1, len(labels_v1["params"]), per_epoch)
            ]
        ),
        labels_v2_after_ipc=torch.stack(
            [
                labels_v2["params"][k][0]
                for k in range(per_epoch - 1, len(labels_v2["params"]), per_epoch)
            ]
        ),
    )
    save_golden(
        out / "eac.npz",
        **meta,
        head_v1_weights=torch.stack([p[0] for p in head_v1["params"]]),
        head_v1_biases=torch.stack([p[1] for p in head_v1["params"]]),
        head_v1_grad0=head_v1["grads"][0][0],
        head_v2_weights=torch.stack([p[0] for p in head_v2["params"]]),
        head_v2_biases=torch.stack([p[1] for p in head_v2["params"]]),
    )
    save_golden(
        out / "final.npz",
        **meta,
        labels_v1=ns["train_labels_v1"],
        labels_v2=ns["train_labels_v2"],
        hard_v1=ns["train_labels_v1"].argmax(1),
        w_v1=ns["W1_v1"],
        w_v2=ns["W1_v2"],
        test_predict_fcv1=ns["test_predict_fcv1"],
        test_predict_fcv2=ns["test_predict_fcv2"],
        acc_testv1=float(ns["acc_testv1"]),
        acc_test_fcv1=float(ns["acc_test_fcv1"]),
        ensemacc=float(ns["ensemacc"]),
    )


if __name__ == "__main__":
    main()
