"""Every method the launcher (``launchers/slurm.py``), the demo (``methods/demo.py``), ``collect.py``
and the tests know: one ``register(Method(...))`` each, data only (whoever runs an entry point imports
it). Adding a method: ``methods/README.md``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

# Launcher setting -> the entry point's flag (the first candidate its parser has); a method's own
# ``flags`` are tried before these.
SETTING_FLAGS: dict[str, tuple[str, ...]] = {
    "dataset": ("--dataset",),
    "data_path": ("--data_path", "--data_root"),
    "noise_mode": ("--noise_mode",),
    "r": ("--r", "--noise_rate"),
    "seed": ("--seed",),
    "epochs": ("--num_epochs", "--epochs", "--nepoch"),
    "out": ("--out",),
}


@dataclass(frozen=True)
class DemoRun:
    """A method's ``make demo`` run on digits: its flags, and the flag that sets its length.

    ``length`` counts ``length_flag`` units; ``units_per_epoch`` converts the demo's ``--epochs``
    override (in the CE baseline's epochs) into them: IEG counts iterations, LRA-Diffusion's cheap
    epochs (a small denoiser on fixed features) run 15 to one of CE's."""

    flags: list[str]
    length: int
    length_flag: str = "--num_epochs"
    units_per_epoch: int = 1


@dataclass(frozen=True)
class Method:
    """One method: its entry points (``get_args_parser`` and ``main``), and what reads them.

    ``per_dataset``: the original's own script for a dataset (``Train_clothing1M.py``). ``ddp``: the
    entry point splits its work over several tasks (``comm.ddp``/``shard``); any other gets one task
    per run. ``flags``: setting -> flags tried before ``SETTING_FLAGS``. ``paper_key``: the ``method``
    of its rows in ``launchers/paper_numbers.yaml`` (default: ``name``)."""

    name: str
    module: str
    per_dataset: dict[str, str] = field(default_factory=dict)
    ddp: bool = False
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    demo: DemoRun | None = None
    paper_key: str | None = None

    def module_for(self, dataset: str) -> str:
        """The dataset's own script when it exists, else the default entry point."""
        special = self.per_dataset.get(dataset)
        return special if special and module_exists(special) else self.module

    def setting_flags(self, setting: str) -> tuple[str, ...]:
        """The candidate flags of a launcher setting, the method's own first."""
        return self.flags.get(setting, ()) + SETTING_FLAGS[setting]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` (its name must be new) and return it.

    Raises:
        ValueError: the name is taken, or ``flags`` names a setting the launcher does not have or
            maps one to anything but a tuple of flags.
    """
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered (by {METHODS[method.name].module})")
    unknown = sorted(set(method.flags) - set(SETTING_FLAGS))
    if unknown:
        raise ValueError(f"method {method.name!r}: flags for unknown settings {unknown}; known: "
                         f"{', '.join(SETTING_FLAGS)}")
    for setting, flags in method.flags.items():
        if not isinstance(flags, tuple) or not all(isinstance(f, str) and f.startswith("-") for f in flags):
            raise ValueError(f"method {method.name!r}: flags[{setting!r}] = {flags!r}; expected a tuple of "
                             f"flags such as ('--epochs',)")
    METHODS[method.name] = method
    return method


def paper_key(method: str) -> str:
    """The ``method`` key of a run's paper numbers (a name no entry has is its own key: IEG's l2r)."""
    entry = METHODS.get(method)
    return (entry.paper_key or entry.name) if entry else method


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# The originals' script names (README "Methods" table), in the demo's order. Every demo run also
# gets --out, --device, --seed and --resume none.
# CE: the same 10 epochs as the co-divide methods run (their originals run epochs 0..num_epochs).
register(Method("standard", "methods.standard.train", ddp=True, demo=DemoRun(
    ["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4", "--batch_size", "64", "--lr", "0.05"], length=10)))
register(Method("dividemix", "methods.dividemix.Train_cifar",
                {"clothing1m": "methods.dividemix.Train_clothing1M", "webvision": "methods.dividemix.Train_webvision"},
                demo=DemoRun(["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4", "--batch_size", "32", "--lr",
                              "0.05", "--warm_up", "4", "--lambda_u", "0", "--lr_milestone", "half"], length=9)))
register(Method("plremix", "methods.plremix.train",
                {"clothing1m": "methods.plremix.train_clothing1m", "webvision": "methods.plremix.train_webvision"},
                demo=DemoRun(["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4", "--batch_size", "32", "--lr",
                              "0.05", "--warm_up", "4", "--lambda_u", "0"], length=9)))
# DMLP purifies the labels on fixed features (8x8 pixels here); its test_acc is its linear head's.
register(Method("dmlp", "methods.dmlp.DMLP", demo=DemoRun(
    ["--dataset", "digits", "--feature_file", "pixels", "--noise_mode", "sym", "--r", "0.4", "--meta_size", "100",
     "--batch", "200", "--batch_fc", "64", "--fix_all"], length=100)))
# IEG holds out 10 clean images per class as its probe set; 26 steps of 50 ~ one CE epoch. The paper's
# loss weights (ce_factor 5, consistency_factor 20) collapse small_cnn on digits: 1 and 1 here.
register(Method("ieg", "methods.ieg.main", ddp=True, demo=DemoRun(
    ["--dataset", "digits_uniform_0.4", "--network_name", "small_cnn", "--probe_dataset_hold_ratio", "0.07",
     "--ce_factor", "1", "--consistency_factor", "1", "--batch_size", "50", "--eval_freq", "20",
     "--decay_steps", "100", "--meta_jvp"], length=100, length_flag="--max_iteration", units_per_epoch=26)))
# LRA-Diffusion retrieves labels among 8x8-pixel neighbours; its denoiser's encoder is linear here.
register(Method("lra", "methods.lra.train_CIFAR",
                {"food101n": "methods.lra.train_Food101N", "clothing1m": "methods.lra.train_Clothing1M",
                 "webvision": "methods.lra.train_WebVision"},
                demo=DemoRun(["--noise_type", "digits-sym-0.4", "--fp_encoder", "pixels", "--diff_encoder", "linear",
                              "--feature_dim", "128", "--batch_size", "64", "--lr", "3e-3", "--eval_freq", "10",
                              "--fix_lr_horizon"], length=150, length_flag="--nepoch", units_per_epoch=15)))
# NMTune's noise is in pre-training: a small timm encoder is pre-trained on digits with 30% symmetric
# noise (once, cached in $LNL_CACHE/nmtune), then probed / tuned frozen on the clean labels.
# linear-probe is NMTune's baseline (finetune.py --freeze-encoder).
register(Method("linear-probe", "methods.nmtune.finetune", demo=DemoRun(
    ["--train-dataset", "digits", "--model", "test_resnet", "--model_source", "timm", "--pretrain-if-missing",
     "digits:0.3", "--freeze-encoder", "--lr", "0.01"], length=10, length_flag="--epochs")))
register(Method("nmtune", "methods.nmtune.nml_tune", demo=DemoRun(
    ["--train-dataset", "digits", "--model", "test_resnet", "--model_source", "timm", "--pretrain-if-missing",
     "digits:0.3", "--freeze-encoder"], length=10, length_flag="--epochs")))
register(Method("nml-finetune", "methods.nmtune.nml_finetune"))  # NMTune's regularisers in full fine-tuning
