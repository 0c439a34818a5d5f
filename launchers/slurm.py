"""Submit lnl runs with submitit: to SLURM, as local subprocesses, or in-process (``--cluster``).

``--method M --dataset D`` resolves to the method's entry point (``methods/registry.py``; its
``get_args_parser`` and ``main``, imported, never re-implemented) and to the papers'
hyperparameters of that setting from ``lnl/presets/<method>.yaml`` (each value printed with its
source); anything after ``--`` is passed to the entry point last, so it overrides everything.
``--seeds`` × ``--noise`` sweeps become one job array. Examples::

    python launchers/slurm.py --method plremix --dataset cifar10 --noise sym:0.5 \\
        --partition gpu --account myproj --data_root data -- --lambda_u 30
    python launchers/slurm.py --method standard --dataset cifar10 --seeds 1 2 3 \\
        --noise sym:0.2,0.5,0.8 asym:0.4 --array_parallelism 4
    python launchers/slurm.py --method standard --dataset digits --epochs 2 --dry_run

Every job runs ``Trainer()(spec)``: it joins the process group when the job has several tasks (one
per GPU, ``lnl.engine.comm.init_distributed``) and calls ``main``. On preemption or time-out SLURM
signals the job ``--signal_delay_s`` seconds early; submitit then calls ``Trainer.checkpoint``, which
resubmits the same run with ``--resume auto``, so the requeued job continues from the run's last
atomic checkpoint (``<out>/last.pth``, ``lnl.engine.checkpoint.LAST_CHECKPOINT``). A job requeued by
SLURM itself (``scontrol requeue``, preemption with ``PreemptMode=REQUEUE``) resumes the same way.
The run folder (``--out``) is fixed at submission, so every restart writes to it; submitit's job
folder (``--job_dir``, containing ``%j``) holds the logs and pickles.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

import submitit  # noqa: E402
import yaml  # noqa: E402

from lnl.engine import comm  # noqa: E402
from lnl.engine.args import default_argument_parser, parse_with_config  # noqa: E402
from lnl.engine.checkpoint import LAST_CHECKPOINT  # noqa: E402
from lnl.presets import get_preset, list_methods, matches  # noqa: E402
from methods.registry import METHODS, module_exists  # noqa: E402

SIGNAL_DELAY_S = 120  # MAE / DINOv2: time to finish the step and write the checkpoint
MAX_NUM_TIMEOUT = 30  # MAE / DINOv2: requeues after time-outs
RESOURCES = Path(__file__).resolve().parent / "resources.yaml"
CONTAINER_REPO = "/opt/lnl"  # where docker/Dockerfile installs the repository
SHARED_NOT_FORWARDED = {"out", "help"}  # --out is the run folder of a single run (handled apart)
# Datasets whose labels carry their own (real) noise: no --noise, and run folders named "real".
REAL_NOISE = {"clothing1m", "webvision", "food101n", "cifar10n", "cifar100n"}


class LaunchError(ValueError):
    """A run that cannot be submitted (unknown method, missing entry point, flag it does not have)."""


def script_path(module: str) -> str:
    """``methods.standard.train`` -> ``methods/standard/train.py`` (relative to the repository)."""
    return module.replace(".", "/") + ".py"


def entry_module(method: str, dataset: str) -> str:
    """The importable entry-point module for ``method`` on ``dataset``.

    Raises:
        LaunchError: unknown method, or its entry point is not in this checkout.
    """
    if method not in METHODS:
        raise LaunchError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    module = METHODS[method].module_for(dataset)
    if not module_exists(module):
        raise LaunchError(f"{method}: entry point {script_path(module)} does not exist in {REPO}")
    return module


@dataclass(frozen=True)
class RunSpec:
    """One run: what the job imports and the exact argv its parser gets (pickled into the job)."""

    method: str
    module: str
    argv: tuple[str, ...]
    out: str  # the run folder, fixed at submission; every restart resumes from it
    sources: tuple[
        tuple[str, str, str], ...
    ] = ()  # (preset flag, value, where the value comes from)

    def command(self, python: str = "python") -> str:
        """The command line the job is equivalent to."""
        return shlex.join([python, script_path(self.module), *self.argv])

    def resumed(self) -> RunSpec:
        """The same run with ``--resume auto`` (whatever ``--resume`` it had)."""
        argv, skip = [], False
        for a in self.argv:
            if skip:
                skip = False
            elif a == "--resume":
                skip = True
            elif not a.startswith("--resume="):
                argv.append(a)
        return replace(self, argv=(*argv, "--resume", "auto"))


def resume_path(spec: RunSpec) -> Path:
    """The checkpoint a requeued job resumes from: the file the engine writes in the run folder."""
    return Path(spec.out) / LAST_CHECKPOINT


class Trainer:
    """The submitted callable (MAE's ``Trainer``, one file): ``Trainer()(spec)`` runs one job task."""

    def __call__(self, spec: RunSpec) -> dict:
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
            spec = spec.resumed()  # requeued by SLURM itself: continue, never start over
        _, local_rank, world = comm.init_distributed()
        module = importlib.import_module(spec.module)
        args = parse_with_config(module.get_args_parser(), list(spec.argv))
        if world > 1 and getattr(args, "device", None) in (None, "cuda"):
            import torch

            if torch.cuda.is_available():
                args.device = f"cuda:{torch.cuda.current_device()}"
        print(
            f"lnl job: {spec.command()}  [rank {comm.get_rank()}/{world}, local {local_rank}]",
            flush=True,
        )
        return module.main(args)

    def checkpoint(self, spec: RunSpec) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption/time-out: resubmit the run with ``--resume auto``."""
        resumed = spec.resumed()
        path = resume_path(resumed)
        state = "present" if path.exists() else "not written yet: the run starts over"
        print(f"lnl job: requeued; {spec.out} resumes from {path} ({state})", flush=True)
        # submitit runs `scontrol requeue` next. A preemption's SIGTERM can reach the job after its
        # USR2, while that command runs, and kill it: the job then ends without being requeued. An
        # ignored signal stays ignored in a child, so the command survives it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return submitit.helpers.DelayedSubmission(Trainer(), resumed)


# ------------------------------------------------------------------------------------------------
# From launcher flags to RunSpecs.


def parse_noise(items: Sequence[str] | None) -> list[tuple[str | None, float | None]]:
    """``["sym:0.2,0.5", "asym:0.4", "none"]`` -> ``[("sym", .2), ("sym", .5), ("asym", .4), (None, None)]``.

    ``None`` (no ``--noise``) keeps the entry point's own noise flags; ``none`` passes none either.
    """
    if not items:
        return [(None, None)]
    points: list[tuple[str | None, float | None]] = []
    for item in items:
        if item == "none":
            points.append((None, None))
            continue
        mode, _, rates = item.partition(":")
        if not mode or not rates:
            raise LaunchError(
                f"--noise {item!r}: expected MODE:RATE[,RATE...] (e.g. sym:0.2,0.5) or none"
            )
        try:
            points += [(mode, float(r)) for r in rates.split(",")]
        except ValueError as e:
            raise LaunchError(f"--noise {item!r}: {e}") from None
    return points


def _option(parser: argparse.ArgumentParser, method: str, key: str) -> str | None:
    return next(
        (o for o in METHODS[method].setting_flags(key) if o in parser._option_string_actions), None
    )


def flags_to_argv(parser: argparse.ArgumentParser, flags: dict[str, Any], origin: str) -> list[str]:
    """Turn ``{dest: value}`` (a preset) into command-line flags of ``parser``.

    Raises:
        LaunchError: a key the parser has no flag for.
    """
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for dest, value in flags.items():
        action = actions.get(dest)
        if action is None:
            raise LaunchError(f"{origin} sets {dest!r}, which the entry point has no flag for")
        opt = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true / store_false / store_const
            argv += [opt] if value == action.const else []
        elif isinstance(value, (list, tuple)):
            argv += [opt, *map(str, value)]
        elif value is not None:
            argv += [opt, str(value)]
    return argv


def _forwarded_shared(args: argparse.Namespace) -> list[str]:
    """The engine's shared flags given to the launcher (non-default values) for the entry point."""
    shared = default_argument_parser()
    defaults = {a.dest: a.default for a in shared._actions if a.option_strings}
    changed = {
        k: getattr(args, k)
        for k in defaults
        if k not in SHARED_NOT_FORWARDED and getattr(args, k) != defaults[k]
    }
    if changed.get("config"):
        changed["config"] = str(Path(changed["config"]).resolve())
    return flags_to_argv(shared, changed, "the launcher")


def _setting_argv(parser, setting: dict[str, Any], method: str, module: str) -> list[str]:
    argv: list[str] = []
    for key, value in setting.items():
        if value is None:
            continue
        opt = _option(parser, method, key)
        if opt is None and key == "dataset" and module in METHODS[method].per_dataset.values():
            continue  # the original's per-dataset script (Train_clothing1M.py): the dataset is its own
        if opt is None:
            raise LaunchError(
                f"{script_path(module)} has none of {METHODS[method].setting_flags(key)} (for the "
                f"launcher's {key}); pass its own flag after --"
            )
        argv += [opt, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def _validate(parser: argparse.ArgumentParser, argv: list[str], module: str) -> argparse.Namespace:
    try:
        ns, unknown = parser.parse_known_args(argv)
    except SystemExit:
        raise LaunchError(
            f"{script_path(module)} rejects these flags (its message is above): {shlex.join(argv)}"
        ) from None
    if unknown:
        raise LaunchError(
            f"{script_path(module)} does not accept {unknown}; see "
            f"python {script_path(module)} --help"
        )
    return ns


def _run_name(ns: argparse.Namespace, dataset: str) -> str:
    from lnl.engine.data import subset_suffix
    from lnl.engine.settings import NoiseSettings

    if dataset in REAL_NOISE and not getattr(ns, "noise_file", None):
        # the dataset's own labels, whatever the entry point's unused noise defaults say
        noise = "real"
    elif hasattr(ns, "noise_mode") and hasattr(ns, "r"):
        try:
            noise = NoiseSettings.from_args(ns).name
        except ValueError as e:  # e.g. --r 1.5 passed through: refused now, not when the job starts
            raise LaunchError(str(e)) from None
    else:
        noise = "default"
    suffix = subset_suffix(getattr(ns, "subset", None))
    return f"{getattr(ns, 'dataset', dataset)}-{noise}-s{getattr(ns, 'seed', 0)}{suffix}"


def build_specs(args: argparse.Namespace, passthrough: Sequence[str] = ()) -> list[RunSpec]:
    """One ``RunSpec`` per (noise point, seed): preset flags, then the setting, then the shared
    flags, then ``passthrough`` (argparse keeps the last value, so later groups override earlier)."""
    module = entry_module(args.method, args.dataset)
    parser = importlib.import_module(module).get_args_parser()
    check_setting(args)
    points = list(itertools.product(parse_noise(args.noise), args.seeds or [None]))
    if args.out and len(points) > 1:
        raise LaunchError("--out names one run folder; a sweep writes under --output_dir")
    data_path = str(Path(args.data_root).resolve() / args.dataset) if args.data_root else None
    specs = []
    for (mode, r), seed in points:
        setting = {
            "dataset": args.dataset,
            "data_path": data_path,
            "noise_mode": mode,
            "r": r,
            "seed": seed,
            "epochs": args.epochs,
        }
        core = (
            _setting_argv(parser, setting, args.method, module)
            + _forwarded_shared(args)
            + list(passthrough)
        )
        ns = _validate(parser, core, module)  # the noise setting the run will have, for the preset
        preset = preset_for(args, getattr(ns, "noise_mode", None), getattr(ns, "r", None))
        argv = flags_to_argv(parser, preset.flags, f"lnl/presets/{args.method}.yaml") + core
        ns = _validate(parser, argv, module)
        out = (
            getattr(ns, "out", None)
            or args.out
            or str(Path(args.output_dir) / args.method / _run_name(ns, args.dataset))
        )
        out = str(Path(out).resolve())
        argv += _setting_argv(parser, {"out": out}, args.method, module)
        sources = tuple(
            (k, repr(preset.flags[k]), src) for k, src in sorted(preset.sources.items())
        )
        specs.append(RunSpec(args.method, module, tuple(argv), out, sources))
        _check_data_folder(ns, module, args.dataset)
    _refuse_shared_folders(specs)
    return specs


def check_setting(args: argparse.Namespace) -> None:
    """Refuse at submission what the job would only refuse when it starts: an unknown dataset, an
    unknown noise mode or a rate outside [0, 1], noise on a real-noise dataset, repeated seeds or
    noise points (several tasks writing one folder)."""
    from lnl.data import list_datasets
    from lnl.data.noise import NOISE_TYPES

    if args.dataset not in list_datasets():
        raise LaunchError(f"--dataset {args.dataset}: unknown; known: {', '.join(list_datasets())}")
    points = parse_noise(args.noise)
    for mode, r in points:
        if mode is None:
            continue
        if args.dataset in REAL_NOISE:
            raise LaunchError(
                f"--noise {mode}:{r:g}: {args.dataset} has real label noise (its own labels); "
                f"drop --noise"
            )
        if mode not in NOISE_TYPES:
            raise LaunchError(
                f"--noise {mode}:{r:g}: unknown noise mode {mode!r}; known: {', '.join(NOISE_TYPES)}"
            )
        if not 0.0 <= r <= 1.0:
            raise LaunchError(f"--noise {mode}:{r:g}: a noise rate is in [0, 1]")
    for what, values in (
        ("--noise", [p for p in points if p != (None, None)]),
        ("--seeds", args.seeds or []),
    ):
        repeated = sorted({_show(v) for v in values if values.count(v) > 1})
        if repeated:
            raise LaunchError(
                f"{what} repeats {', '.join(repeated)}: each run needs its own folder; give each once"
            )


def _show(value) -> str:
    return f"{value[0]}:{value[1]:g}" if isinstance(value, tuple) else str(value)


def _check_data_folder(ns: argparse.Namespace, module: str, dataset: str) -> None:
    from lnl.data import dataset_info

    if dataset_info(dataset).folder is None:
        return  # digits: no folder to read
    for key in ("data_path", "data_root"):
        folder = getattr(ns, key, None)
        if folder and not Path(folder).is_dir():
            raise LaunchError(
                f"{script_path(module)} --{key} {folder}: no such folder (check --data_root; "
                f"prepare the dataset with data_prep/)"
            )


def _refuse_shared_folders(specs: Sequence[RunSpec]) -> None:
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        if spec.out in seen:
            raise LaunchError(
                f"two runs would write {spec.out}:\n  {seen[spec.out].command()}\n  {spec.command()}\n"
                f"give them different seeds, noise or --out"
            )
        seen[spec.out] = spec


def preset_for(args: argparse.Namespace, mode: str | None, r: float | None):
    """The papers' flags for this setting (empty with ``--no_preset`` or without a preset file)."""
    from lnl.presets import Preset

    if args.no_preset or args.method not in list_methods():
        return Preset()
    setting = {"dataset": args.dataset, "noise_mode": mode, "r": r}
    return get_preset(args.method, **{k: v for k, v in setting.items() if v is not None})


# ------------------------------------------------------------------------------------------------
# Resources, executor, containers.

RESOURCE_KEYS = ("nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
CLUSTER_KEYS = ("partition", "account", "qos", "constraint", "exclude", "comment")


def resources(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Resources from ``launchers/resources.yaml`` (matched on method and dataset), then flags.

    Returns:
        ``(values, sources)`` keyed by ``RESOURCE_KEYS``.
    """
    setting = {"method": args.method, "dataset": args.dataset}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for entry in yaml.safe_load(RESOURCES.read_text()) or []:
        if matches(entry["match"], setting):
            values.update(entry["flags"])
            sources.update({k: f"{RESOURCES.name}: {entry['source']}" for k in entry["flags"]})
    for key in RESOURCE_KEYS:
        if getattr(args, key) is not None:
            values[key], sources[key] = getattr(args, key), "flag"
    return values, sources


def container_setup(
    args: argparse.Namespace, specs: Sequence[RunSpec]
) -> tuple[str | None, list[str]]:
    """``(python command, srun args)`` that run the job inside ``--container``.

    A ``.sif`` file runs under Apptainer (``apptainer exec --nv``); anything else is an image for
    NVIDIA pyxis/enroot (``srun --container-image``; a registry image or a ``.sqsh`` file, since
    pyxis cannot read a local Docker daemon). The run folders, the job folder and ``--data_root``
    are mounted at the same paths; the code is the image's copy in ``/opt/lnl``.
    """
    if not args.container:
        return None, []
    mounts = {str(Path(s.out).parent) for s in specs} | {str(job_root(args))}
    if args.data_root:
        mounts.add(str(Path(args.data_root).resolve()))
    mounts |= set(args.container_mounts or [])
    python = f"{CONTAINER_REPO}/.venv/bin/python"
    if args.container.endswith(".sif"):
        binds = ",".join(sorted(mounts))
        return (
            f"apptainer exec --nv --pwd {CONTAINER_REPO} --bind {shlex.quote(binds)} "
            f"{shlex.quote(str(Path(args.container).resolve()))} {python}"
        ), []
    pairs = ",".join(m if ":" in m else f"{m}:{m}" for m in sorted(mounts))
    return python, [
        f"--container-image={args.container}",
        f"--container-mounts={pairs}",
        f"--container-workdir={CONTAINER_REPO}",
    ]


def job_root(args: argparse.Namespace) -> Path:
    """The folder above the job folders (the part of ``--job_dir`` before ``%j``)."""
    folder = str(job_folder(args))
    return Path(folder.split("%", 1)[0]).resolve() if "%" in folder else Path(folder).resolve()


def job_folder(args: argparse.Namespace) -> Path:
    folder = Path(args.job_dir) if args.job_dir else Path(args.output_dir) / "jobs" / "%j"
    if "%j" not in str(folder):
        raise LaunchError(f"--job_dir {folder} must contain %j (one folder per job)")
    return folder.absolute()


def executor_parameters(
    args: argparse.Namespace, res: dict[str, Any], srun_args: list[str], n_jobs: int
) -> dict[str, Any]:
    """AutoExecutor parameters: generic ones plus ``slurm_*`` ones (ignored off SLURM)."""
    repo = CONTAINER_REPO if args.container else str(REPO)
    tasks = tasks_per_run(args, res)
    params: dict[str, Any] = {
        "name": args.name or f"lnl-{args.method}-{args.dataset}",
        "nodes": res["nodes"],
        "tasks_per_node": tasks,
        "cpus_per_task": res["cpus_per_task"],
        "timeout_min": res["timeout_min"],
        "slurm_signal_delay_s": args.signal_delay_s,
        "slurm_setup": [
            f"export PYTHONPATH={shlex.quote(repo)}${{PYTHONPATH:+:$PYTHONPATH}}",
            f"export OMP_NUM_THREADS={res['cpus_per_task']}",
        ],
    }
    if res.get("gpus_per_node"):
        params["gpus_per_node"] = res["gpus_per_node"]
    if res.get("mem_gb"):
        params["mem_gb"] = res["mem_gb"]
    if srun_args:
        params["slurm_srun_args"] = srun_args
    for key in CLUSTER_KEYS:
        if getattr(args, key):
            params[f"slurm_{key}"] = getattr(args, key)
    if n_jobs > 1 and args.array_parallelism:
        params["slurm_array_parallelism"] = args.array_parallelism
    return params


def tasks_per_run(args: argparse.Namespace, res: dict[str, Any]) -> int:
    """One task per GPU for a DDP-aware method; one task for any other, whatever the GPU count.

    Raises:
        LaunchError: ``--tasks_per_node`` above 1 for a method that does not split its work.
    """
    if not METHODS[args.method].ddp:
        if (args.tasks_per_node or 1) > 1:
            raise LaunchError(
                f"--tasks_per_node {args.tasks_per_node}: {args.method} does not split its work "
                f"over tasks (no DDP); every task would train the same run"
            )
        return 1
    return args.tasks_per_node or max(int(res.get("gpus_per_node") or 0), 1)


def resolve_cluster(args: argparse.Namespace) -> str:
    """``--cluster``, else ``slurm`` where ``sbatch`` is on PATH; never a silent fall back to local.

    Raises:
        LaunchError: no ``--cluster`` and no SLURM here.
    """
    if args.cluster:
        return args.cluster
    if shutil.which("sbatch"):
        return "slurm"
    raise LaunchError(
        "no SLURM on this machine (sbatch is not on PATH): pass --cluster local to run the jobs as "
        "local processes here, or --cluster debug to run them in this process"
    )


@contextlib.contextmanager
def _no_srun_needed():
    """submitit's SLURM executor refuses to exist where ``srun`` is not on PATH; writing the sbatch
    script of a dry run does not need it (a laptop may print what a cluster would run)."""
    from submitit.slurm.slurm import SlurmExecutor

    original = SlurmExecutor.__dict__["affinity"]
    SlurmExecutor.affinity = classmethod(lambda cls: 1)
    try:
        yield
    finally:
        SlurmExecutor.affinity = original


def make_executor(args: argparse.Namespace, specs: Sequence[RunSpec], cluster: str | None = None):
    """The ``submitit.AutoExecutor`` for these runs (``cluster`` overrides ``--cluster``)."""
    res, _ = resources(args)
    python, srun_args = container_setup(args, specs)
    kwargs: dict[str, Any] = {"slurm_max_num_timeout": args.max_num_timeout}
    if python:
        kwargs["slurm_python"] = python
    cluster = cluster or resolve_cluster(args)
    context = _no_srun_needed() if cluster == "slurm" and args.dry_run else contextlib.nullcontext()
    with context:
        executor = submitit.AutoExecutor(folder=job_folder(args), cluster=cluster, **kwargs)
    executor.update_parameters(**executor_parameters(args, res, srun_args, len(specs)))
    return executor


# ------------------------------------------------------------------------------------------------
# Submission, dry run, reports.


def sbatch_script(args: argparse.Namespace, specs: Sequence[RunSpec]) -> str:
    """The sbatch script submitit would write for these runs (one array when several)."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = make_executor(args, specs, cluster="slurm")._executor
    params = dict(slurm.parameters)
    if len(specs) > 1:
        params["map_count"] = len(specs)
    return _make_sbatch_string(command=slurm._submitit_command_str, folder=slurm.folder, **params)


def describe(args: argparse.Namespace, specs: Sequence[RunSpec]) -> str:
    """Human-readable summary: resources and their sources, preset values and sources, commands."""
    res, res_sources = resources(args)
    lines = [
        f"{len(specs)} run(s) of {args.method} on {args.dataset}; resources "
        + " ".join(f"{k}={res.get(k)}" for k in RESOURCE_KEYS)
    ]
    if not METHODS[args.method].ddp and int(res.get("gpus_per_node") or 0) > 1:
        lines.append(
            f"  {args.method} does not split its work over tasks (no DDP): one task per run, its "
            f"{res['gpus_per_node']} GPUs visible to that task"
        )
    for source in dict.fromkeys(res_sources[k] for k in RESOURCE_KEYS if k in res_sources):
        keys = ", ".join(k for k in RESOURCE_KEYS if res_sources.get(k) == source)
        lines.append(f"  {keys}: {source}")
    for spec in specs:
        lines.append(f"  run folder {spec.out}")
        lines += [f"    preset {k} = {value}: {src}" for k, value, src in spec.sources]
        lines.append(f"    command: {spec.command()}")
    return "\n".join(lines)


def submit(args: argparse.Namespace, specs: Sequence[RunSpec]) -> list:
    """Submit the runs: one job, or one job array (``map_array``) for a sweep."""
    executor = make_executor(args, specs)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO) not in paths:  # local/debug executors inherit this process's environment
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), *paths]))
    if len(specs) == 1:
        return [executor.submit(Trainer(), specs[0])]
    return executor.map_array(Trainer(), list(specs))


def _last_exception_line(text: str) -> str | None:
    """``ValueError: ...`` from a traceback embedded in submitit's error message."""
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)\b.*")
    found = [ln.strip() for ln in text.splitlines() if pattern.match(ln.strip())]
    return found[-1] if found else None


def report(jobs: Sequence, specs: Sequence[RunSpec]) -> tuple[list[dict], list[str]]:
    """Wait for the jobs; return the results records and one message per failed job (its error
    and the path of its log)."""
    results, failures = [], []
    for job, spec in zip(jobs, specs):
        try:
            results.append(job.results()[0])  # rank 0's record (every task returns main's result)
        except (
            Exception
        ) as e:  # submitit raises FailedJobError / UncompletedJobError with the traceback
            error = _last_exception_line(str(e)) or repr(e)
            failures.append(
                f"job {job.job_id} ({spec.out}) failed: {error.strip()}\n"
                f"  log: {job.paths.stderr}\n  stdout: {job.paths.stdout}"
            )
    return results, failures


# ------------------------------------------------------------------------------------------------
# Command line.


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "Submit lnl runs (submitit: SLURM, local or in-process)",
        parents=[default_argument_parser()],
        usage="%(prog)s --method M --dataset D [options] [-- entry-point flags]",
        epilog="Flags after -- go to the entry point unchanged and override presets and settings.",
    )
    g = p.add_argument_group("what to run")
    g.add_argument("--method", required=True, choices=sorted(METHODS))
    g.add_argument("--dataset", required=True, help="a name from lnl.data.list_datasets()")
    g.add_argument(
        "--noise",
        nargs="+",
        default=None,
        metavar="MODE:R[,R...]",
        help="noise points, e.g. sym:0.2,0.5,0.8 asym:0.4 ('none': the entry point's own)",
    )
    g.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="one run per seed and noise point"
    )
    g.add_argument("--epochs", type=int, default=None, help="the entry point's epoch flag")
    g.add_argument(
        "--data_root", default=None, help="folder of dataset folders (--data_path ROOT/DATASET)"
    )
    g.add_argument(
        "--output_dir", default="runs", help="run folders go to OUTPUT_DIR/<method>/<setting>"
    )
    g.add_argument(
        "--no_preset", action="store_true", help="do not apply lnl/presets/<method>.yaml"
    )
    c = p.add_argument_group("cluster (resources default from launchers/resources.yaml)")
    c.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="default: slurm when sbatch is on PATH (else an error: pass --cluster local)",
    )
    c.add_argument(
        "--job_dir",
        default=None,
        help="submitit folder, must contain %%j (default OUTPUT_DIR/jobs/%%j)",
    )
    for key in CLUSTER_KEYS:
        c.add_argument(f"--{key}", default=None, help=f"sbatch --{key}")
    c.add_argument("--nodes", type=int, default=None)
    c.add_argument("--gpus_per_node", type=int, default=None, help="one task (rank) per GPU")
    c.add_argument(
        "--tasks_per_node", type=int, default=None, help="default: max(gpus_per_node, 1)"
    )
    c.add_argument("--cpus_per_task", type=int, default=None)
    c.add_argument("--mem_gb", type=float, default=None)
    c.add_argument("--timeout_min", type=int, default=None)
    c.add_argument(
        "--array_parallelism", type=int, default=None, help="max array tasks running at once"
    )
    c.add_argument(
        "--signal_delay_s", type=int, default=SIGNAL_DELAY_S, help="USR2 this early: checkpoint"
    )
    c.add_argument(
        "--max_num_timeout", type=int, default=MAX_NUM_TIMEOUT, help="requeues after time-outs"
    )
    c.add_argument("--name", default=None, help="job name (default lnl-<method>-<dataset>)")
    c.add_argument(
        "--container",
        default=None,
        help="IMAGE for pyxis/enroot (srun --container-image) or an Apptainer .sif",
    )
    c.add_argument("--container_mounts", nargs="+", default=None, help="extra SRC[:DST] mounts")
    c.add_argument(
        "--dry_run",
        action="store_true",
        help="print the sbatch script and commands; submit nothing",
    )
    c.add_argument(
        "--wait", action="store_true", help="wait for the jobs and print results or errors"
    )
    return p


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: build the runs, then print (``--dry_run``), or submit (and ``--wait``)."""
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(own)
    try:
        specs = build_specs(args, passthrough)
        tasks_per_run(args, resources(args)[0])
        if not args.dry_run:
            resolve_cluster(args)
    except LaunchError as e:
        print(f"slurm.py: error: {e}", file=sys.stderr)
        return 2
    print(describe(args, specs))
    if args.dry_run:
        print("\n# sbatch script (submitit writes it with the job's pickled Trainer(spec)):\n")
        print(sbatch_script(args, specs))
        return 0
    jobs = submit(args, specs)
    for job, spec in zip(jobs, specs):
        print(f"submitted job {job.job_id}: {spec.out}\n  log: {job.paths.stdout}")
    print(f"collect: python launchers/collect.py {Path(args.output_dir).resolve()}")
    if not args.wait:
        return 0
    results, failures = report(jobs, specs)
    for r in results:
        print(f"done: {r}")
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    # Import this file as `launchers.slurm` so the job unpickles Trainer/RunSpec by reference.
    from launchers import slurm as _launcher

    sys.exit(_launcher.main())
