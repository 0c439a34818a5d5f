"""Adding a method touches only its folder, its registry entry and its test (methods/README.md): a toy
8th method (``toy_method.py`` beside this file), registered through ``methods.registry`` without
editing any other file, runs through the launcher's in-process ``debug`` cluster and lands in
collect.py's table."""

from __future__ import annotations

import pytest
import yaml

pytest.importorskip("submitit")  # installed by make; absent on bare machines (the lent GPU)
from launchers import collect, slurm  # noqa: E402
from methods import registry  # noqa: E402
from tests.launchers import toy_method  # noqa: E402


@pytest.fixture
def toy():
    """The toy's registry entry; its length flag is its own (``--rounds``), so the entry names it."""
    entry = registry.register(
        registry.Method("toy", "tests.launchers.toy_method", flags={"epochs": ("--rounds",)})
    )
    try:
        yield entry
    finally:
        registry.METHODS.pop(entry.name)


def test_toy_method_runs_through_the_debug_cluster_and_collect(toy, tmp_path, capsys):
    rc = slurm.main(
        [
            "--method",
            "toy",
            "--dataset",
            "digits",
            "--noise",
            "sym:0.4",
            "--seeds",
            "3",
            "--epochs",
            "2",
            "--cluster",
            "debug",
            "--output_dir",
            str(tmp_path / "runs"),
            "--wait",
        ]
    )
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "toy" / "digits-sym0.4-s3"
    assert rc == 0, out
    assert (
        f"command: python tests/launchers/toy_method.py --dataset digits --noise_mode sym --r 0.4 --seed 3 "
        f"--rounds 2 --out {run}" in out
    )  # the launcher's --epochs became the entry's own --rounds
    assert yaml.safe_load((run / "args.yaml").read_text())["rounds"] == 2
    direct = toy_method.main(
        toy_method.get_args_parser().parse_args(
            ["--r", "0.4", "--seed", "3", "--rounds", "2", "--out", str(tmp_path / "direct")]
        )
    )

    rows = collect.main([str(tmp_path / "runs")])
    (row,) = rows
    assert (row["method"], row["dataset"], row["noise"], row["seeds"], row["epochs"]) == (
        "toy",
        "digits",
        "sym0.4",
        "3",
        "2",
    )
    assert row["test_acc"] == round(100 * direct["test_acc"], 2)
    assert row["best_acc"] == round(100 * direct["best_acc"], 2)
    assert (
        f"| toy | digits | sym0.4 | 3 | 2 | {row['test_acc']:.2f} |"
        in (tmp_path / "runs/results.md").read_text()
    )


def test_register_refuses_a_taken_name_and_bad_flags(toy):
    with pytest.raises(ValueError, match="'toy' is already registered"):
        registry.register(registry.Method("toy", "elsewhere.train"))
    with pytest.raises(ValueError, match=r"unknown settings \['epoch'\]"):
        registry.register(
            registry.Method("toy2", "tests.launchers.toy_method", flags={"epoch": ("--rounds",)})
        )
    with pytest.raises(ValueError, match=r"flags\['epochs'\] = '--rounds'; expected a tuple"):
        registry.register(
            registry.Method("toy2", "tests.launchers.toy_method", flags={"epochs": "--rounds"})
        )
    assert set(registry.METHODS) >= {"toy", "standard"} and "toy2" not in registry.METHODS
