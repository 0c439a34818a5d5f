"""launchers/slurm.py without a cluster: method table, presets and flags, dry run, containers, the
requeue path's checkpoint file, sharded DDP batches, and collect.py's table."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("submitit")  # installed by make; absent on bare machines (the lent GPU)
from launchers import collect, slurm  # noqa: E402
from lnl.engine import LAST_CHECKPOINT, comm, find_resume_path, save_checkpoint
from lnl.engine.settings import NoiseSettings
from lnl.presets import list_methods
from methods import registry

ALL_METHODS = set(registry.METHODS)
REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, passthrough = slurm.split_passthrough(argv)
    return slurm.get_args_parser().parse_args(own), passthrough


def test_method_table_names_every_entry_point():
    assert slurm.METHODS is registry.METHODS
    folders = {p.parent.name for p in (REPO / "methods").glob("*/__init__.py")}
    assert {
        m.module.split(".")[1] for m in registry.METHODS.values()
    } == folders  # every method folder runs
    for m in registry.METHODS.values():
        missing = [s for s in (m.module, *m.per_dataset.values()) if not slurm.module_exists(s)]
        assert not missing, f"{m.name}: {missing}"
    assert set(list_methods()) <= ALL_METHODS  # every preset file is a method's
    paper_keys = {registry.paper_key(m) for m in ALL_METHODS}
    assert {row["method"] for row in collect.load_paper_numbers()} <= paper_keys
    assert slurm.METHODS["standard"].module_for("digits") == "methods.standard.train"
    assert (
        slurm.script_path(slurm.METHODS["dividemix"].module) == "methods/dividemix/Train_cifar.py"
    )
    assert slurm.script_path(slurm.METHODS["lra"].module) == "methods/lra/train_CIFAR.py"
    assert slurm.script_path(slurm.METHODS["dmlp"].module) == "methods/dmlp/DMLP.py"
    with pytest.raises(slurm.LaunchError, match="unknown method"):
        slurm.entry_module("nope", "cifar10")


def test_dry_run_prints_sbatch_script_and_exact_command(tmp_path, capsys):
    rc = slurm.main(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "2",
            "--noise",
            "sym:0.4",
            "--seeds",
            "5",
            "--output_dir",
            str(tmp_path),
            "--partition",
            "gpu",
            "--account",
            "proj",
            "--timeout_min",
            "30",
            "--dry_run",
            "--",
            "--lr",
            "0.1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "jobs").exists()  # nothing submitted
    run = tmp_path / "standard" / "digits-sym0.4-s5"
    assert (
        f"command: python methods/standard/train.py --lr 0.05 --batch_size 64 --num_epochs 30 "
        f"--dataset digits --noise_mode sym --r 0.4 --seed 5 --num_epochs 2 --lr 0.1 --out {run}"
    ) in out
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --cpus-per-task=1",
        f"{tmp_path}/jobs/%j/%j_0_log.out",
        "-u -m submitit.core._submit",
        "export OMP_NUM_THREADS=1",
    ):
        assert line in out, line
    assert "preset lr = 0.05: lnl demo setting" in out  # each preset value with its source
    assert "--gpus-per-node" not in out  # digits resources: no GPU
    args, extra = parse(
        ["--method", "standard", "--dataset", "digits", "--output_dir", str(tmp_path)]
    )
    executor = slurm.make_executor(args, slurm.build_specs(args, extra), cluster="slurm")._executor
    assert executor.max_num_timeout == 30 and executor.parameters["signal_delay_s"] == 120


def test_sweep_is_an_array_and_flags_override_presets(tmp_path):
    args, extra = parse(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--seeds",
            "1",
            "2",
            "--noise",
            "sym:0.2,0.5",
            "asym:0.4",
            "--output_dir",
            str(tmp_path),
            "--gpus_per_node",
            "2",
            "--",
            "--batch_size",
            "32",
        ]
    )
    specs = slurm.build_specs(args, extra)
    assert [Path(s.out).name for s in specs] == [
        "digits-sym0.2-s1",
        "digits-sym0.2-s2",
        "digits-sym0.5-s1",
        "digits-sym0.5-s2",
        "digits-asym0.4-s1",
        "digits-asym0.4-s2",
    ]
    from methods.standard.train import get_args_parser

    ns = get_args_parser().parse_args(list(specs[-1].argv))
    assert (ns.batch_size, ns.lr, ns.num_epochs, NoiseSettings.from_args(ns).name, ns.seed) == (
        32,
        0.05,
        30,
        "asym0.4",
        2,
    )
    script = slurm.sbatch_script(args, specs)
    assert "#SBATCH --array=0-5%6" in script and "%A_%a" in script
    args, extra = parse(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--",
            "--subset",
            "256",
        ]
    )
    assert Path(slurm.build_specs(args, extra)[0].out).name.endswith(
        "-sub256"
    )  # not the full run's folder
    assert "#SBATCH --gpus-per-node=2" in script and "#SBATCH --ntasks-per-node=2" in script


def test_bad_flags_are_rejected_before_submission(tmp_path, capsys):
    rc = slurm.main(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--",
            "--no_such_flag",
            "1",
        ]
    )
    assert rc == 2 and "does not accept ['--no_such_flag', '1']" in capsys.readouterr().err
    args, _ = parse(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--job_dir",
            str(tmp_path / "jobs"),
        ]
    )
    with pytest.raises(slurm.LaunchError, match="must contain %j"):
        slurm.make_executor(args, slurm.build_specs(args))
    with pytest.raises(slurm.LaunchError, match="MODE:RATE"):
        slurm.parse_noise(["sym"])


def test_preset_flags_become_the_entry_points_flags():
    p = argparse.ArgumentParser()
    p.add_argument("--lambda_u", type=float)
    p.add_argument("--fix_x", action="store_true")
    p.add_argument("--no-tb", dest="tb", action="store_false")
    p.add_argument("--views", nargs="+")
    argv = slurm.flags_to_argv(
        p, {"lambda_u": 25, "fix_x": True, "tb": False, "views": ["a", "b"]}, "t"
    )
    assert argv == ["--lambda_u", "25", "--fix_x", "--no-tb", "--views", "a", "b"]
    assert slurm.flags_to_argv(p, {"fix_x": False, "tb": True}, "t") == []
    with pytest.raises(
        slurm.LaunchError, match="'lambda_c', which the entry point has no flag for"
    ):
        slurm.flags_to_argv(p, {"lambda_c": 1}, "t")


def test_resources_come_from_presets_then_flags(tmp_path):
    args, _ = parse(["--method", "lra", "--dataset", "webvision"])
    values, sources = slurm.resources(args)
    assert values["gpus_per_node"] == 4 and "train_WebVision.py" in sources["gpus_per_node"]
    args, _ = parse(
        ["--method", "standard", "--dataset", "digits", "--mem_gb", "3", "--gpus_per_node", "1"]
    )
    values, sources = slurm.resources(args)
    assert (values["mem_gb"], values["gpus_per_node"], values["cpus_per_task"]) == (3, 1, 1)
    assert sources["mem_gb"] == "flag"
    for cpu_set in ("digits", "digits16"):  # one entry matches either (a list in the match)
        values, _ = slurm.resources(parse(["--method", "dividemix", "--dataset", cpu_set])[0])
        assert (values["gpus_per_node"], values["cpus_per_task"]) == (0, 1), cpu_set
    values, _ = slurm.resources(parse(["--method", "dividemix", "--dataset", "cifar10"])[0])
    assert values["gpus_per_node"] == 1


@pytest.mark.parametrize("image", ["nvcr.io/acme/lnl:cuda", "lnl.sif"])
def test_container_runs_the_images_python(tmp_path, image):
    args, _ = parse(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--container",
            image,
            "--data_root",
            str(tmp_path / "data"),
        ]
    )
    script = slurm.sbatch_script(args, slurm.build_specs(args))
    assert "export PYTHONPATH=/opt/lnl" in script
    if image.endswith(".sif"):
        assert (
            "apptainer exec --nv --pwd /opt/lnl --bind" in script
            and "/opt/lnl/.venv/bin/python" in script
        )
        assert str(tmp_path / "data") in script
    else:
        assert (
            f"--container-image={image}" in script
            and f"{tmp_path}/standard:{tmp_path}/standard" in script
        )


@pytest.fixture
def sigterm_restored():
    """``Trainer.checkpoint`` ignores SIGTERM in its process (a job about to end): restore it here."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


def _spec(tmp_path):
    args, extra = parse(
        ["--method", "standard", "--dataset", "digits", "--output_dir", str(tmp_path)]
    )
    (spec,) = slurm.build_specs(args, extra)
    return spec


def test_the_requeue_command_survives_a_late_sigterm(tmp_path, sigterm_restored):
    """After ``checkpoint`` the commands the job starts (submitit's ``scontrol requeue``) ignore a
    SIGTERM that arrives while they run; before it, one is killed by it."""
    code = "import os, signal, time; os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.2)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGTERM
    slurm.Trainer().checkpoint(_spec(tmp_path))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_requeue_resumes_from_the_file_the_engine_writes(tmp_path, sigterm_restored):
    """MAE's bug was a launcher looking for checkpoint.pth while the trainer wrote checkpoint-N.pth:
    here the requeued argv must resolve (through the entry point's own --resume logic) to the very
    file save_checkpoint wrote."""
    args, extra = parse(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--output_dir",
            str(tmp_path),
            "--",
            "--resume",
            "none",
        ]
    )
    (spec,) = slurm.build_specs(args, extra)
    written = save_checkpoint(spec.out, epoch=0, models={"model": torch.nn.Linear(2, 2)})
    assert written.name == LAST_CHECKPOINT and slurm.resume_path(spec) == written
    delayed = slurm.Trainer().checkpoint(spec)
    assert isinstance(delayed.function, slurm.Trainer)
    (resumed,) = delayed.args
    from methods.standard.train import get_args_parser

    ns = get_args_parser().parse_args(list(resumed.argv))
    assert ns.resume == "auto" and ns.out == spec.out
    assert find_resume_path(ns.out, ns.resume) == written
    assert resumed.argv.count("--resume") == 1


def test_sharded_loader_splits_each_global_batch():
    from lnl.data.gpu import GPULoader

    images = torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8)
    loader = GPULoader(images, torch.arange(50) % 10, 16, mean=(0.5,) * 3, std=(0.25,) * 3, seed=3)
    shards = []
    for rank in (0, 1):
        sharded = comm.ShardedLoader(loader, rank=rank, world_size=2)
        sharded.set_epoch(0)
        assert len(sharded) == len(loader) == 4
        shards.append(list(sharded))
    loader.set_epoch(0)
    full = list(loader)
    for b, (x, _, i) in enumerate(full):
        assert torch.equal(torch.cat([shards[0][b][0], shards[1][b][0]]), x)
        assert torch.equal(torch.cat([shards[0][b][2], shards[1][b][2]]), i)
        assert len(shards[0][b][1]) - len(shards[1][b][1]) in (0, 1)
    assert comm.shard(loader) is loader and comm.init_distributed() == (0, 0, 1)  # single process


def test_collect_mean_std_and_paper_numbers(tmp_path):
    for seed, acc in ((1, 0.9), (2, 0.8), (3, 0.85)):
        run = tmp_path / f"dividemix/cifar10-sym0.5-s{seed}"
        run.mkdir(parents=True)
        rec = {
            "method": "dividemix",
            "dataset": "cifar10",
            "noise": "sym0.5",
            "seed": seed,
            "epochs": 300,
            "test_acc": acc,
            "best_acc": acc + 0.01,
            "seconds": 10.0,
        }
        (run / "results.jsonl").write_text(
            f'{{"test_acc": 0.1, "seed": {seed}, "method": "x"}}\n' + json.dumps(rec) + "\n"
        )  # last line counts
    rows = collect.main([str(tmp_path)])
    (row,) = rows
    assert (row["seeds"], row["test_acc"], row["test_std"], row["best_acc"]) == (
        "1 2 3",
        85.0,
        5.0,
        86.0,
    )
    assert (row["paper_best"], row["paper_last"]) == (94.6, 94.4)
    assert "Augmentation-for-LNL" in row["paper_source"]
    md = (tmp_path / "results.md").read_text()
    assert (
        "| dividemix | cifar10 | sym0.5 | 1 2 3 | 300 | 85.00 ± 5.00 | 86.00 ± 5.00 | 94.60 | 94.40 |"
        in md
    )


def test_collect_skips_lines_of_other_schemas(tmp_path):
    # NMTune's original per-epoch lines (vars(args) + current_epoch) may share results.jsonl with lnl's record.
    legacy = [{"save": "x", "current_epoch": e, "CIFAR10:top1": 0.5} for e in range(2)]
    rec = {
        "method": "nmtune",
        "dataset": "cifar10",
        "noise": "pre-sym0.3",
        "seed": 1,
        "test_acc": 0.7,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*legacy, rec])
    )
    (tmp_path / "b").mkdir()  # a run still going: only the original's lines so far
    (tmp_path / "b" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
    (found,) = collect.find_results([tmp_path])
    # read as a RunRecord: the fields the line lacks take the record's defaults
    assert found == {
        **rec,
        "best_acc": None,
        "seconds": 0.0,
        "subset": None,
        "run_dir": str(tmp_path / "a"),
        "settings": {},
    }


def test_collect_finds_paper_numbers_under_the_registry_key(monkeypatch):
    # A variant registered with DivideMix's paper_key is compared with DivideMix's numbers; a record whose
    # method no entry has (IEG's --method l2r) keeps its own name, which paper_numbers.yaml lacks.
    variant = registry.Method(
        "dividemix-variant", "methods.dividemix.Train_cifar", paper_key="dividemix"
    )
    monkeypatch.setitem(registry.METHODS, variant.name, variant)
    records = [
        {"method": m, "dataset": "cifar10", "noise": "sym0.5", "seed": 1, "test_acc": 0.9}
        for m in ("dividemix-variant", "l2r", "dividemix")
    ]
    rows = {r["method"]: r for r in collect.summarize(records, collect.load_paper_numbers())}
    assert rows["dividemix-variant"]["paper_best"] == rows["dividemix"]["paper_best"] == 94.6
    assert rows["l2r"]["paper_best"] is None
