"""launchers/slurm.py against a real single-node SLURM (conftest's ``slurm_cluster``; no mocks):
each method's 2-epoch digits run collected by collect.py, a 3-seed sweep as one job array, a job
that fails, preemption (submitit's USR2 -> ``Trainer.checkpoint`` path, then ``scontrol requeue``)
resuming with every epoch logged exactly once, and a 2-task DDP job (gloo on CPU).

The cluster runs two 1-CPU jobs at a time; the module fixture submits the independent jobs at once
so the tests overlap, keeping the file at a few minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("submitit")  # installed by make; absent on bare machines (the lent GPU)
from launchers import collect, slurm  # noqa: E402
from lnl.engine import LAST_CHECKPOINT, read_jsonl
from methods.registry import METHODS

pytestmark = pytest.mark.slow
FAST = ["--no-tensorboard", "--device", "cpu"]
JOB_TIMEOUT_S = 300


@dataclass
class Launch:
    args: object
    specs: list
    jobs: list


def launch(argv: list[str]) -> Launch:
    """Submit through the launcher's own functions (what ``main`` does), keeping the job handles."""
    own, passthrough = slurm.split_passthrough(argv)
    args = slurm.get_args_parser().parse_args(own + ["--cluster", "slurm"])
    specs = slurm.build_specs(args, passthrough)
    return Launch(args, specs, slurm.submit(args, specs))


def wait_until(predicate, timeout_s: float, what: str, cluster=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    queue = subprocess.run(["squeue", "-o", "%i %T %r %M"], capture_output=True, text=True).stdout
    pytest.fail(
        f"timed out after {timeout_s:.0f} s waiting for {what}\nsqueue:\n{queue}"
        + (f"\n{cluster.logs(10)}" if cluster else "")
    )


def finish(run: Launch, cluster) -> tuple[list[dict], list[str]]:
    wait_until(
        lambda: all(j.done() for j in run.jobs),
        JOB_TIMEOUT_S,
        f"jobs {[j.job_id for j in run.jobs]}",
        cluster,
    )
    return slurm.report(run.jobs, run.specs)


def method_skip_reason(method: str) -> str | None:
    module = METHODS[method].module_for("digits")
    if not slurm.module_exists(module):
        return f"{method}: entry point {slurm.script_path(module)} is not written yet"
    if METHODS[method].demo is None:
        return f"{method}: no demo row in methods/registry.py yet (its digits smoke-test flags)"
    return None


def method_argv(method: str, root: Path) -> list[str]:
    """The method's demo flags (its registry entry's) for 2 of CE's epochs: through the launcher's --epochs,
    or, for a method counted in iterations (IEG), its own length flag after --."""
    run = METHODS[method].demo
    length, own = ["--epochs", "2"], []
    if run.length_flag not in METHODS[method].setting_flags("epochs"):
        length, own = [], [run.length_flag, str(2 * run.units_per_epoch)]
    return [
        "--method",
        method,
        "--dataset",
        run.dataset,
        *length,
        "--output_dir",
        str(root),
        "--job_dir",
        str(root / "jobs" / "%j"),
        "--",
        *run.flags,
        *own,
        *FAST,
    ]


@pytest.fixture(scope="module")
def early(slurm_cluster, tmp_path_factory):
    """Submitted together: each method's run, the sweep array and the failing job."""
    root = tmp_path_factory.mktemp("launcher_runs")
    subs: dict[str, Launch | str | Exception] = {}
    for method in METHODS:
        try:
            subs[method] = method_skip_reason(method) or launch(
                method_argv(method, root / "methods")
            )
        except slurm.LaunchError as e:  # reported by that method's test, not the whole module
            subs[method] = e
    subs["sweep"] = launch(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "2",
            "3",
            "--noise",
            "sym:0.4",
            "--array_parallelism",
            "2",
            "--output_dir",
            str(root / "sweep"),
            "--",
            "--batch_size",
            "128",
            *FAST,
        ]
    )
    subs["fail"] = launch(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--output_dir",
            str(root / "fail"),
            "--",
            "--arch",
            "no_such_model",
            *FAST,
        ]
    )
    return root, subs


@pytest.mark.parametrize("method", list(METHODS))
def test_method_runs_on_slurm_and_is_collected(early, slurm_cluster, method):
    root, subs = early
    run = subs[method]
    if isinstance(run, str):
        pytest.skip(run)
    if isinstance(run, Exception):
        pytest.fail(f"the launcher refused {method}: {run}")
    results, failures = finish(run, slurm_cluster)
    assert not failures, failures
    (spec,) = run.specs
    steps = [row["step"] for row in read_jsonl(Path(spec.out) / "eval.jsonl")]
    assert len(steps) == len(set(steps)) and steps == sorted(steps), steps
    if method == "standard":
        assert steps == [0, 1] and results[0]["epochs"] == 2
    rows = collect.summarize(collect.find_results([root / "methods"]))
    ours = (results[0]["method"], METHODS[method].demo.dataset)
    row = next(r for r in rows if (r["method"], r["dataset"]) == ours)
    assert row["test_acc"] == round(100 * results[0]["test_acc"], 2)


def test_sweep_is_one_array_and_collects_mean_std(early, slurm_cluster, tmp_path):
    root, subs = early
    run = subs["sweep"]
    assert len(run.jobs) == 3
    array_ids = {j.job_id.split("_")[0] for j in run.jobs}
    assert len(array_ids) == 1 and sorted(j.job_id.split("_")[1] for j in run.jobs) == [
        "0",
        "1",
        "2",
    ]
    (script,) = [p.read_text() for p in (root / "sweep" / "jobs").rglob("*_submission.sh")]
    assert "#SBATCH --array=0-2%2" in script
    results, failures = finish(run, slurm_cluster)
    assert not failures, failures
    assert sorted(r["seed"] for r in results) == [1, 2, 3]
    rows = collect.main([str(root / "sweep"), "--out", str(tmp_path / "table")])
    (row,) = rows
    accs = [100 * r["test_acc"] for r in results]
    mean = sum(accs) / 3
    std = (sum((a - mean) ** 2 for a in accs) / 2) ** 0.5
    assert (row["seeds"], row["test_acc"], row["test_std"]) == (
        "1 2 3",
        round(mean, 2),
        round(std, 2),
    )
    assert "| standard | digits | sym0.4 | 1 2 3 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "table.csv").read_text().startswith("method,dataset,noise,seeds")


def test_failed_job_reports_error_and_log(early, slurm_cluster):
    _, subs = early
    run = subs["fail"]
    results, failures = finish(run, slurm_cluster)
    assert results == [] and len(failures) == 1
    message = failures[0]
    assert "no_such_model" in message and f"job {run.jobs[0].job_id}" in message
    log = Path(message.split("log: ")[1].split()[0])
    assert log.exists() and "no_such_model" in log.read_text()


def _state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def test_preemption_and_requeue_resume_from_last_checkpoint(slurm_cluster, tmp_path):
    # Enough epochs of enough steps that the job is still running well after `scontrol requeue`:
    # SLURM's SIGTERM is caught by submitit, and a job that finishes within KillWait is not rerun.
    epochs = 10
    run = launch(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            str(epochs),
            "--seeds",
            "7",
            "--noise",
            "sym:0.4",
            "--output_dir",
            str(tmp_path),
            "--",
            "--batch_size",
            "32",
            *FAST,
        ]
    )
    (spec,), (job,) = run.specs, run.jobs
    out, evals = Path(spec.out), Path(spec.out) / "eval.jsonl"
    stdout = Path(job.paths.stdout)
    lines = lambda: len(read_jsonl(evals)) if evals.exists() else 0  # noqa: E731
    # The run's own log.txt is appended across restarts; SLURM may truncate the job's stderr on requeue.
    run_log = out / "log.txt"
    resumes = lambda: run_log.read_text().count("resumed from") if run_log.exists() else 0  # noqa: E731
    wait_until(
        lambda: (out / LAST_CHECKPOINT).exists(),
        JOB_TIMEOUT_S,
        "the first checkpoint",
        slurm_cluster,
    )
    # 1. Preemption as submitit sees it: SIGTERM + USR2 -> Trainer.checkpoint() -> scontrol requeue.
    job._interrupt()
    wait_until(lambda: resumes() == 1, JOB_TIMEOUT_S, "the resume after USR2", slurm_cluster)
    seen = lines()
    wait_until(
        lambda: lines() > seen and _state(job.job_id) == "RUNNING",
        JOB_TIMEOUT_S,
        "an epoch after it",
    )
    assert lines() <= epochs - 4, "too few epochs left before the second requeue; raise epochs"
    # 2. SLURM's own requeue (an admin, or PreemptMode=REQUEUE): the pickled spec is rerun.
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    results, failures = finish(run, slurm_cluster)
    assert not failures, failures
    assert [row["step"] for row in read_jsonl(evals)] == list(range(epochs))  # each epoch once
    assert len(read_jsonl(out / "results.jsonl")) == 1 and results[0]["epochs"] == epochs
    assert resumes() == 2
    assert f"requeued; {out} resumes from {out / LAST_CHECKPOINT} (present)" in stdout.read_text()


def test_two_task_ddp_job(slurm_cluster, tmp_path):
    run = launch(
        [
            "--method",
            "standard",
            "--dataset",
            "digits",
            "--epochs",
            "2",
            "--tasks_per_node",
            "2",
            "--cpus_per_task",
            "1",
            "--output_dir",
            str(tmp_path),
            "--",
            "--batch_size",
            "128",
            *FAST,
        ]
    )
    results, failures = finish(run, slurm_cluster)
    assert not failures, failures
    (job,), (spec,) = run.jobs, run.specs
    logs = [Path(str(job.paths.stdout).replace("_0_log", f"_{t}_log")).read_text() for t in (0, 1)]
    assert "[rank 0/2, local 0]" in logs[0] and "[rank 1/2, local 1]" in logs[1]
    assert len(read_jsonl(Path(spec.out) / "results.jsonl")) == 1  # only rank 0 writes
    assert [row["step"] for row in read_jsonl(Path(spec.out) / "eval.jsonl")] == [0, 1]
