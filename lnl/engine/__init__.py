"""Training-loop pieces shared by every method: seeding, checkpoints, logging, progress, distributed."""

from lnl.engine.args import default_argument_parser, parse_with_config
from lnl.engine.checkpoint import (
    LAST_CHECKPOINT,
    find_resume_path,
    load_checkpoint,
    save_checkpoint,
)
from lnl.engine.defaults import default_setup, resolve_device
from lnl.engine.logger import MetricLogger, append_jsonl, read_jsonl
from lnl.engine.seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "LAST_CHECKPOINT",
    "MetricLogger",
    "append_jsonl",
    "default_argument_parser",
    "default_setup",
    "find_resume_path",
    "get_rng_state",
    "load_checkpoint",
    "parse_with_config",
    "read_jsonl",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]
