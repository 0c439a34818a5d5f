"""Noise-file readers and writers, checked against every shipped file and the clean CIFAR labels.

Expected rates: shared/data/cifar10/SOURCES.md and cifar100/SOURCES.md (agreement with the clean
labels, to 2 decimals), plremix_dividemix.md §7 (Tiny-ImageNet rates, CIFAR-10 asym histogram) and
lra_dmlp.md §A.6 (exact PMD rates against the official labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lnl.data.noise_files import NoisyLabels, load_noise_file, meta_from_name, save_noise_file
from lnl.data.noise_maps import asym_map

from .conftest import NOISE_DIR

#: relative path -> noise rate against the official clean labels (tolerance 0.001). The DivideMix
#:JSON
#: agreements are given to 4 decimals here; SOURCES.md rounds them to 0.82/0.80/0.55/0.28/0.19
#: (CIFAR-10) and 0.80/0.60/0.51/0.21/0.11 (CIFAR-100), all within 0.01 of these.
EXPECTED_NOISE = {
    "dividemix_json/cifar10/0.20.json": 1 - 0.8206,
    "dividemix_json/cifar10/0.40_asym.json": 1 - 0.7998,
    "dividemix_json/cifar10/0.50.json": 1 - 0.5503,
    "dividemix_json/cifar10/0.80.json": 1 - 0.2793,
    "dividemix_json/cifar10/0.90.json": 1 - 0.1921,
    "dividemix_json/cifar100/0.20.json": 1 - 0.8022,
    "dividemix_json/cifar100/0.40_asym.json": 1 - 0.5971,
    "dividemix_json/cifar100/0.50.json": 1 - 0.5050,
    "dividemix_json/cifar100/0.80.json": 1 - 0.2078,
    "dividemix_json/cifar100/0.90.json": 1 - 0.1092,
    "dividemix_json/tinyimagenet/0.00.json": 0.0,
    "dividemix_json/tinyimagenet/0.20.json": 0.199,
    "dividemix_json/tinyimagenet/0.40.json": 0.398,
    "dividemix_json/tinyimagenet/0.45_asym.json": 0.4507,
    "dividemix_json/tinyimagenet/0.50.json": 0.497,
    "dividemix_json/tinyimagenet/0.60.json": 0.597,
    "dividemix_json/tinyimagenet/0.80.json": 0.796,
    "lra_pmd/cifar10-1-0.35.npy": 0.3503,
    "lra_pmd/cifar10-1-0.40.npy": 0.4047,
    "lra_pmd/cifar10-1-0.45.npy": 0.4510,
    "lra_pmd/cifar10-1-0.50.npy": 0.5024,
    "lra_pmd/cifar10-1-0.55.npy": 0.5470,
    "lra_pmd/cifar10-1-0.60.npy": 0.5926,
    "lra_pmd/cifar10-1-0.65.npy": 0.6430,
    "lra_pmd/cifar10-1-0.70.npy": 0.7046,
    "lra_pmd/cifar10-1-0.35_U_0.3.npy": 0.5330,
    "lra_pmd/cifar10-1-0.35_U_0.6.npy": 0.7177,
    "lra_pmd/cifar10-1-0.35_A_0.3.npy": 0.4124,
    "lra_pmd/cifar100-1-0.35.npy": 0.3526,
    "lra_pmd/cifar100-1-0.70.npy": 0.6987,
    "lra_pmd/cifar100-1-0.35_U_0.3.npy": 0.5474,
    "lra_pmd/cifar100-1-0.35_U_0.6.npy": 0.7403,
    "lra_pmd/cifar100-1-0.35_A_0.3.npy": 0.5433,
}
SHIPPED = sorted(
    str(p.relative_to(NOISE_DIR)) for p in NOISE_DIR.rglob("*") if p.suffix in (".json", ".npy")
)


def _dataset(rel: str) -> str:
    name = rel.split("/")[1]
    return (
        "cifar100"
        if name.startswith("cifar100")
        else ("cifar10" if name.startswith("cifar10") else "tinyimagenet")
    )


def test_every_shipped_file_has_an_expected_rate(noise_dir):
    assert SHIPPED == sorted(EXPECTED_NOISE)


@pytest.mark.parametrize("rel", SHIPPED)
def test_shipped_file_rate_against_clean_labels(noise_dir, clean_labels, rel):
    ds = _dataset(rel)
    num_classes = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200}[ds]
    lra = rel.startswith("lra_pmd")
    noisy = load_noise_file(
        noise_dir / rel,
        num_classes=num_classes,
        num_samples=45000 if lra else len(clean_labels[ds]),
    )
    assert noisy.labels.dtype == torch.int64
    clean = clean_labels[ds][: len(noisy)]  # LRA files cover the first 45k training images
    rate = float(np.mean(noisy.labels.numpy() != clean))
    assert rate == pytest.approx(EXPECTED_NOISE[rel], abs=0.001)
    meta = noisy.meta
    assert meta["format"] == ("lra_npy" if lra else "dividemix_json")
    assert len(meta["sha256"]) == 64 and meta["num_samples"] == len(noisy)
    assert meta["dataset"] == {"tinyimagenet": "tiny_imagenet"}.get(ds, ds)


def test_cifar10_asym_histogram(noise_dir):
    labels = load_noise_file(noise_dir / "dividemix_json/cifar10/0.40_asym.json").labels
    expected = [7010, 7008, 2990, 4991, 2961, 5009, 5000, 7039, 5000, 2992]
    assert torch.bincount(labels, minlength=10).tolist() == expected


@pytest.mark.parametrize(
    "rel,dataset,num_classes",
    [
        ("dividemix_json/cifar10/0.40_asym.json", "cifar10", 10),
        ("dividemix_json/cifar100/0.40_asym.json", "cifar100", 100),
        ("dividemix_json/tinyimagenet/0.45_asym.json", "tiny_imagenet", 200),
    ],
)
def test_shipped_asym_files_follow_the_maps(noise_dir, clean_labels, rel, dataset, num_classes):
    y = clean_labels[_dataset(rel)]
    lab = load_noise_file(noise_dir / rel).labels.numpy()
    changed = lab != y
    assert np.array_equal(lab[changed], asym_map(dataset, num_classes)[y[changed]])


@pytest.mark.parametrize(
    "ds,kind,rate,differ",
    [
        ("cifar10", "U", "0.3", 0.299),
        ("cifar10", "U", "0.6", 0.602),
        ("cifar10", "A", "0.3", 0.156),
        ("cifar100", "U", "0.3", 0.302),
        ("cifar100", "U", "0.6", 0.602),
        ("cifar100", "A", "0.3", 0.296),
    ],
)
def test_lra_hybrids_overlay_the_pmd_file(noise_dir, ds, kind, rate, differ):
    base = load_noise_file(noise_dir / f"lra_pmd/{ds}-1-0.35.npy").labels.numpy()
    hyb = load_noise_file(noise_dir / f"lra_pmd/{ds}-1-0.35_{kind}_{rate}.npy")
    assert hyb.meta["type"] == f"pmd+{kind}" and hyb.meta["rate"] == float(rate)
    assert hyb.meta["pmd_level"] == 0.35 and hyb.meta["pmd_type"] == 1
    lab = hyb.labels.numpy()
    changed = lab != base
    assert np.mean(changed) == pytest.approx(differ, abs=0.002)
    if kind == "A":  # the asymmetric map applied to the PMD label
        m = asym_map(ds, 10 if ds == "cifar10" else 100)
        assert np.array_equal(lab[changed], m[base[changed]])
    else:  # uniform over the other classes: the offset (new - base) mod C is spread evenly
        c = 10 if ds == "cifar10" else 100
        offsets = np.bincount((lab[changed] - base[changed]) % c, minlength=c)[1:]
        assert offsets.min() > 0 and offsets.max() / offsets.mean() < 1.25


def test_meta_from_name(tmp_path):
    assert meta_from_name(tmp_path / "cifar10" / "0.40_asym.json") == {
        "type": "asym",
        "rate": 0.4,
        "dataset": "cifar10",
    }
    assert meta_from_name(tmp_path / "0.5_sym.json") == {"type": "sym", "rate": 0.5}
    assert meta_from_name(tmp_path / "cifar100-1-0.35_U_0.6.npy") == {
        "dataset": "cifar100",
        "pmd_type": 1,
        "pmd_level": 0.35,
        "type": "pmd+U",
        "rate": 0.6,
    }
    assert meta_from_name(tmp_path / "labels.npy") == {}


@pytest.mark.parametrize("ext", [".json", ".npy", ".npz"])
def test_round_trip_each_format(tmp_path, ext):
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    meta = {"type": "sym", "rate": 0.5, "seed": 1, "transition_matrix": np.eye(2)}
    digest = save_noise_file(tmp_path / f"n{ext}", NoisyLabels(labels, meta))
    back = load_noise_file(tmp_path / f"n{ext}", num_classes=10, num_samples=8)
    assert torch.equal(back.labels, labels) and back.meta["sha256"] == digest
    if ext == ".npz":
        assert back.meta["type"] == "sym" and back.meta["transition_matrix"] == [[1, 0], [0, 1]]
    if ext == ".json":
        assert json.loads((tmp_path / "n.json").read_text()) == labels.tolist()
    if ext == ".npy":
        arr = np.load(tmp_path / "n.npy")
        assert arr.dtype == np.int64 and arr.shape == (8,)
    assert list(tmp_path.iterdir()) == [tmp_path / f"n{ext}"]  # no temporary files left


def test_reader_rejects_bad_files(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_noise_file(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[0, 1, 12]")
    with pytest.raises(ValueError, match="maximum 12 >= num_classes=10"):
        load_noise_file(tmp_path / "b.json", num_classes=10)
    with pytest.raises(ValueError, match="holds 3 labels, expected 50000"):
        load_noise_file(tmp_path / "b.json", num_samples=50000)
    np.save(tmp_path / "c.npy", np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="must be 1-D"):
        load_noise_file(tmp_path / "c.npy")
    (tmp_path / "d.txt").write_text("0 1")
    with pytest.raises(ValueError, match="unknown noise-file extension '.txt'"):
        load_noise_file(tmp_path / "d.txt")
    with pytest.raises(ValueError, match="unknown noise-file extension"):
        save_noise_file(tmp_path / "e.csv", [0, 1])
    with pytest.raises(FileNotFoundError):
        load_noise_file(tmp_path / "missing.json")
