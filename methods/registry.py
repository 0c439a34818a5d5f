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


# The demo's dataset is digits16 (lnl.data.small): unaugmented 16x16 digits, on which CE memorises
# the noise within DEMO_EPOCHS, as CIFAR CE does in the papers' 300.
DEMO_DATASET = "digits16"


@dataclass(frozen=True)
class DemoRun:
    """A method's ``make demo`` run on digits: its flags, and the flag that sets its length.

    ``length`` counts ``length_flag`` units; ``units_per_epoch`` converts the demo's ``--epochs``
    override (in the CE baseline's epochs) into them: IEG counts iterations, LRA-Diffusion's cheap
    epochs (a small denoiser on fixed features) run 15 to one of CE's; ``length_offset`` is added
    (the co-divide methods count epochs 0..num_epochs). ``noise_flag`` reads the demo's noise file
    (None: the run brings its own noise). Runs of one ``group`` share a process, in order (NMTune's
    two rows share the encoder that the first pre-trains). ``cost``: rough seconds on one idle core,
    to start the longest runs first. ``dataset``: the one its flags name (its results' ``dataset``)."""

    flags: list[str]
    length: int
    length_flag: str = "--num_epochs"
    units_per_epoch: int = 1
    length_offset: int = 0
    noise_flag: str | None = "--noise_file"
    group: str | None = None
    cost: float = 10.0
    dataset: str = DEMO_DATASET


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
        raise ValueError(
            f"method {method.name!r} is already registered (by {METHODS[method.name].module})"
        )
    unknown = sorted(set(method.flags) - set(SETTING_FLAGS))
    if unknown:
        raise ValueError(
            f"method {method.name!r}: flags for unknown settings {unknown}; known: "
            f"{', '.join(SETTING_FLAGS)}"
        )
    for setting, flags in method.flags.items():
        if not isinstance(flags, tuple) or not all(
            isinstance(f, str) and f.startswith("-") for f in flags
        ):
            raise ValueError(
                f"method {method.name!r}: flags[{setting!r}] = {flags!r}; expected a tuple of "
                f"flags such as ('--epochs',)"
            )
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
# gets --out, --device, --seed, --resume never and its noise flag (the demo's noise file: 60% sym).
DEMO_EPOCHS = 40  # CE's; the co-divide methods run epochs 0..DEMO_EPOCHS-1, as many

# The co-divide methods in the demo: warm-up 5, batch 32, lr 0.05; mixup's Beta(0.5, 0.5) (the originals'
# Clothing1M/WebVision value) instead of CIFAR's 4, chosen on 32x32 flipped digits in 20 epochs
# (RESULTS.md); λ_u 25: the DivideMix paper's weight for 50-80% symmetric noise.
_CODIVIDE_DEMO = (
    "--dataset digits16 --batch_size 32 --lr 0.05 --warm_up 5 --alpha 0.5 --lambda_u 25".split()
)

# CE on the co-divide methods' schedule (LR / 10 halfway), as the DivideMix paper's CE baseline (best and
# last); its cosine default anneals to 0 at the last epoch, where CE's accuracy peaks in a short run.
register(
    Method(
        "standard",
        "methods.standard.train",
        ddp=True,
        demo=DemoRun(
            "--dataset digits16 --batch_size 64 --lr 0.05 --lr_schedule step".split(),
            length=DEMO_EPOCHS,
            cost=0.6 * DEMO_EPOCHS,
        ),
    )
)
register(
    Method(
        "dividemix",
        "methods.dividemix.Train_cifar",
        {
            "clothing1m": "methods.dividemix.Train_clothing1M",
            "webvision": "methods.dividemix.Train_webvision",
        },
        demo=DemoRun(
            _CODIVIDE_DEMO + ["--lr_milestone", "half"],
            length=DEMO_EPOCHS,
            length_offset=-1,
            cost=3.5 * DEMO_EPOCHS,
        ),
    )
)
register(
    Method(
        "plremix",
        "methods.plremix.train",
        {
            "clothing1m": "methods.plremix.train_clothing1m",
            "webvision": "methods.plremix.train_webvision",
        },
        demo=DemoRun(
            _CODIVIDE_DEMO + ["--aug", "train"],
            length=DEMO_EPOCHS,
            length_offset=-1,
            cost=5 * DEMO_EPOCHS,
        ),
    )
)
# DMLP purifies the labels on fixed features (the 8x8 pixels here); its test_acc is its linear head's.
register(
    Method(
        "dmlp",
        "methods.dmlp.DMLP",
        demo=DemoRun(
            (
                "--dataset digits16 --feature_file pixels --meta_size 100 --batch 200 --batch_fc 64 "
                "--fix_all"
            ).split(),
            length=100,
            cost=4,
        ),
    )
)
# IEG holds out 10 clean images per class as its probe set (the name's noise is replaced by the demo's
# file); 26 steps of 50 ~ one CE epoch; 250 steps end a cosine cycle (100, then 150: --cos_t_mul 1.5).
# Its views are its own (the original's crops and AutoAugment; no flip on digits16). The paper's loss
# weights (ce_factor 5, consistency_factor 20) collapse small_cnn on digits: 1 and 1.
register(
    Method(
        "ieg",
        "methods.ieg.main",
        ddp=True,
        demo=DemoRun(
            (
                "--dataset digits16_uniform_0.6 --network_name small_cnn "
                "--probe_dataset_hold_ratio 0.07 --ce_factor 1 --consistency_factor 1 "
                "--batch_size 50 --eval_freq 20 --decay_steps 100 --meta_jvp"
            ).split(),
            length=250,
            length_flag="--max_iteration",
            units_per_epoch=26,
            cost=45,
        ),
    )
)
# LRA-Diffusion retrieves labels among 8x8-pixel neighbours; its denoiser's encoder is linear here.
register(
    Method(
        "lra",
        "methods.lra.train_CIFAR",
        {
            "food101n": "methods.lra.train_Food101N",
            "clothing1m": "methods.lra.train_Clothing1M",
            "webvision": "methods.lra.train_WebVision",
        },
        demo=DemoRun(
            (
                "--dataset digits16 --fp_encoder pixels --diff_encoder linear --feature_dim 128 "
                "--batch_size 64 --lr 3e-3 --eval_freq 10 --fix_lr_horizon"
            ).split(),
            length=150,
            length_flag="--nepoch",
            units_per_epoch=15,
            noise_flag="--noise_type",
            cost=25,
        ),
    )
)
# NMTune's noise is in pre-training: a small timm encoder is pre-trained on the 32x32 digits with 30%
# symmetric noise (once, cached in $LNL_CACHE/nmtune), then probed / tuned frozen on the clean labels
# (of digits too: these rows read no demo noise file).
# linear-probe is NMTune's baseline (finetune.py --freeze-encoder).
register(
    Method(
        "linear-probe",
        "methods.nmtune.finetune",
        demo=DemoRun(
            (
                "--train-dataset digits --model test_resnet --model_source timm "
                "--pretrain-if-missing digits:0.3 --freeze-encoder --lr 0.01"
            ).split(),
            length=10,
            length_flag="--epochs",
            noise_flag=None,
            group="nmtune",
            cost=30,
            dataset="digits",
        ),
    )
)
register(
    Method(
        "nmtune",
        "methods.nmtune.nml_tune",
        demo=DemoRun(
            (
                "--train-dataset digits --model test_resnet --model_source timm "
                "--pretrain-if-missing digits:0.3 --freeze-encoder"
            ).split(),
            length=10,
            length_flag="--epochs",
            noise_flag=None,
            group="nmtune",
            cost=5,
            dataset="digits",
        ),
    )
)
register(
    Method("nml-finetune", "methods.nmtune.nml_finetune")
)  # NMTune's regularisers in full fine-tuning
