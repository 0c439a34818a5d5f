"""The shared parser: flags every entry point has. Methods use it as a parent parser and keep their
originals' flag names for everything else; ``--config`` YAML files set defaults before the parse."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import yaml

BACKENDS = ("auto", "cuda", "cpu", "reference")


def default_argument_parser() -> argparse.ArgumentParser:
    """Shared flags (``add_help=False``, to be used as ``parents=[...]``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("lnl (shared)")
    g.add_argument("--config", default=None, help="YAML file of flag defaults (command line wins)")
    g.add_argument(
        "--out", default=None, help="run folder (default: runs/<method>/<dataset>-<noise>-s<seed>)"
    )
    g.add_argument(
        "--resume",
        default="auto",
        help="'auto' (resume <out>/last.pth when present), 'never' (start over), or a checkpoint path",
    )
    g.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks")
    g.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    g.add_argument(
        "--offline", action="store_true", help="log to wandb in offline mode (implies --wandb)"
    )
    g.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="do not write TensorBoard event files",
    )
    g.add_argument("--knn-backend", default="auto", choices=BACKENDS + ("faiss",))
    g.add_argument("--gmm-backend", default="auto", choices=BACKENDS + ("sklearn",))
    g.add_argument("--plr-backend", default="auto", choices=BACKENDS)
    return p


def str2bool(value: str | bool) -> bool:
    """Boolean flag values as the originals spell them (absl ``--use_ema=false``, NMTune ``--mlp-with-res=True``).

    Raises:
        argparse.ArgumentTypeError: anything but true/false, yes/no, t/f, y/n or 1/0 (any case).
    """
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "t", "yes", "y", "1"):
        return True
    if value.lower() in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false), got {value!r}")


def parse_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; when ``--config FILE`` is given, its keys become defaults first.

    Raises:
        ValueError: the YAML names a flag the parser does not have.
    """
    pre, _ = parser.parse_known_args(argv)
    if getattr(pre, "config", None):
        with open(pre.config) as f:
            values = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--config {pre.config}: unknown keys {unknown}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)
