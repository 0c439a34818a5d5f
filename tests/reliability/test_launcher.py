"""The launcher refuses at submission what a job would only find out on the cluster, never falls back
to local processes silently, prints a dry run without SLURM, and collect.py never averages two settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("submitit")  # installed by make; absent on bare machines (the lent GPU)
from launchers import collect, slurm  # noqa: E402
from tests.launchers.conftest import slurm_cluster  # noqa: E402,F401  (the real test SLURM)


@pytest.fixture
def no_slurm_on_path(tmp_path, monkeypatch):
    """PATH without srun and sbatch (the Python interpreter is called by its full path)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("git", "bash", "sh"):
        if shutil.which(tool):
            (bare / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bare))
    assert shutil.which("srun") is None and shutil.which("sbatch") is None


def test_dry_run_needs_no_srun(no_slurm_on_path, tmp_path, capsys):
    rc = slurm.main(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--output_dir",
            str(tmp_path / "runs"),
            "--dry_run",
        ]
    )
    out = capsys.readouterr().out
    assert (
        rc == 0
        and "#SBATCH --job-name=lnl-standard-digits" in out
        and "command: python methods/standard" in out
    )


def test_no_slurm_and_no_cluster_is_an_error_not_local_processes(
    no_slurm_on_path, tmp_path, capsys
):
    rc = slurm.main(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--output_dir",
            str(tmp_path / "runs"),
        ]
    )
    assert rc == 2 and "sbatch is not on PATH): pass --cluster local" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing submitted


def test_sbatch_on_path_means_slurm(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    args = slurm.get_args_parser().parse_args(["--method", "standard", "--dataset", "digits"])
    assert slurm.resolve_cluster(args) == "slurm"
    args.cluster = "local"
    assert slurm.resolve_cluster(args) == "local"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "cifar11"], "--dataset cifar11: unknown; known: "),
        (["--noise", "sym:1.5"], "--noise sym:1.5: a noise rate is in [0, 1]"),
        (["--noise", "symm:0.4"], "unknown noise mode 'symm'; known: sym, sym_flip"),
        (["--seeds", "1", "1"], "--seeds repeats 1: each run needs its own folder"),
        (["--noise", "sym:0.4,0.40"], "--noise repeats sym:0.4"),
        (["--noise", "sym:0.4", "sym:0.4"], "--noise repeats sym:0.4"),
        (["--dataset", "webvision", "--noise", "sym:0.5"], "webvision has real label noise"),
        (
            ["--dataset", "cifar10", "--data_root", "/nonexistent/data"],
            "--data_path /nonexistent/data/cifar10: no such folder",
        ),
    ],
)
def test_bad_settings_are_refused_at_submission(argv, message, tmp_path, capsys):
    base = {"--dataset": "digits"}
    if "--dataset" in argv:
        base = {}
    flat = [x for kv in base.items() for x in kv]
    rc = slurm.main(
        ["--method", "standard", *flat, *argv, "--output_dir", str(tmp_path), "--cluster", "local"]
    )
    assert rc == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no job folder, no run folder


def _data_root(tmp_path: Path, *datasets: str) -> Path:
    for name in datasets:
        (tmp_path / "data" / name).mkdir(parents=True)
    return tmp_path / "data"


@pytest.mark.parametrize(
    "dataset, script", [("clothing1m", "Train_clothing1M.py"), ("webvision", "Train_webvision.py")]
)
def test_dividemix_real_noise_scripts_launch_and_folders_say_real(tmp_path, dataset, script):
    args = slurm.get_args_parser().parse_args(
        [
            "--method",
            "dividemix",
            "--dataset",
            dataset,
            "--data_root",
            str(_data_root(tmp_path, dataset)),
            "--output_dir",
            str(tmp_path),
        ]
    )
    (spec,) = slurm.build_specs(args)
    assert (
        spec.command().startswith(f"python methods/dividemix/{script} ")
        and "--dataset" not in spec.argv
    )
    assert Path(spec.out).name.startswith(f"{dataset}-real-s")


@pytest.mark.parametrize("method, tasks", [("plremix", 1), ("lra", 1), ("standard", 4)])
def test_only_ddp_methods_get_a_task_per_gpu(tmp_path, method, tasks, capsys):
    """WebVision's preset asks for 4 GPUs: 4 copies of a PLReMix run would train into one folder."""
    rc = slurm.main(
        [
            "--method",
            method,
            "--dataset",
            "webvision",
            "--data_root",
            str(_data_root(tmp_path, "webvision")),
            "--output_dir",
            str(tmp_path),
            "--dry_run",
        ]
    )
    out = capsys.readouterr().out
    assert (
        rc == 0
        and f"#SBATCH --ntasks-per-node={tasks}" in out
        and "#SBATCH --gpus-per-node=4" in out
    )
    assert ("does not split its work over tasks" in out) == (tasks == 1)
    if tasks == 1:
        rc = slurm.main(
            [
                "--method",
                method,
                "--dataset",
                "digits",
                "--tasks_per_node",
                "2",
                "--output_dir",
                str(tmp_path / "x"),
                "--dry_run",
            ]
        )
        assert rc == 2 and f"{method} does not split its work" in capsys.readouterr().err


def _result(folder: Path, flags: dict, **record) -> None:
    folder.mkdir(parents=True)
    (folder / "args.yaml").write_text(
        yaml.safe_dump({"out": str(folder), "device": "cpu", **flags})
    )
    (folder / "results.jsonl").write_text(
        json.dumps({"method": "standard", "dataset": "digits", "noise": "sym0.4", **record}) + "\n"
    )


def test_collect_groups_by_every_setting_and_marks_smoke_runs(tmp_path):
    """A --subset run, a shorter run and a run with another lr are three rows, not one average."""
    _result(
        tmp_path / "a", {"seed": 1, "lr": 0.05, "num_epochs": 2}, seed=1, epochs=2, test_acc=0.9
    )
    _result(
        tmp_path / "b", {"seed": 2, "lr": 0.05, "num_epochs": 2}, seed=2, epochs=2, test_acc=0.8
    )
    _result(
        tmp_path / "c",
        {"seed": 1, "lr": 0.05, "num_epochs": 2, "subset": 256},
        seed=1,
        epochs=2,
        test_acc=0.3,
    )
    _result(
        tmp_path / "d", {"seed": 1, "lr": 0.05, "num_epochs": 1}, seed=1, epochs=1, test_acc=0.5
    )
    _result(tmp_path / "e", {"seed": 1, "lr": 0.1, "num_epochs": 2}, seed=1, epochs=2, test_acc=0.7)
    rows = collect.main([str(tmp_path)])
    by = {(r["epochs"], r["subset"], r["settings"]): r for r in rows}
    assert len(rows) == 4
    assert (
        by[("2", None, "lr=0.05")]["seeds"] == "1 2"
        and by[("2", None, "lr=0.05")]["test_acc"] == 85.0
    )
    assert (
        by[("2", 256, "lr=0.05")]["test_acc"] == 30.0
        and by[("2", None, "lr=0.1")]["test_acc"] == 70.0
    )
    md = (tmp_path / "results.md").read_text()
    assert "smoke run (--subset 256)" in md


def test_collect_of_a_missing_folder_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        collect.main([str(tmp_path / "nope")])
    assert (
        exit_.value.code == 2 and f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    )
    assert not (tmp_path / "nope").exists()


@pytest.mark.slow
def test_without_cluster_flag_a_run_goes_to_the_real_slurm(slurm_cluster, tmp_path, capsys):  # noqa: F811
    """On the test cluster (sbatch on PATH) the default is SLURM: the job gets a SLURM id and finishes."""
    rc = slurm.main(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--output_dir",
            str(tmp_path),
            "--wait",
            "--",
            "--subset",
            "256",
            "--no-tensorboard",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    job_id = out.split("submitted job ")[1].split(":")[0]
    assert job_id.isdigit()  # a SLURM job, not a local process (submitit's local ids are pids_...)
    assert (tmp_path / "jobs" / job_id / f"{job_id}_0_log.out").exists()
    assert len(collect.find_results([tmp_path])) == 1
