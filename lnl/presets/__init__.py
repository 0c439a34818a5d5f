"""The papers' per-setting hyperparameters, one YAML file per method (``<method>.yaml``), shared by
the entry points (``--preset``) and the launcher.

Each file is a list of entries::

    - match: {dataset: cifar10, noise_mode: sym, r: 0.5}   # keys of the run's setting (a list: any of)
      flags: {lambda_u: 25, p_threshold: 0.5}              # flag defaults for matching runs
      source: "LiJunnan1992/DivideMix README @ d9d3058"    # where every value comes from

``get_preset`` merges the flags of every entry whose ``match`` is contained in the setting, in file
order, so general entries come first and specific ones override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

FOLDER = Path(__file__).resolve().parent


@dataclass
class Preset:
    flags: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # flag -> source of its value


def list_methods() -> list[str]:
    """Methods that have a preset file."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


@cache
def _entries(method: str) -> tuple[dict, ...]:
    path = FOLDER / f"{method}.yaml"
    if not path.exists():
        raise ValueError(f"no presets for method {method!r}; known: {', '.join(list_methods())}")
    entries = yaml.safe_load(path.read_text()) or []
    for i, e in enumerate(entries):
        missing = {"match", "flags", "source"} - set(e)
        if missing:
            raise ValueError(f"{path} entry {i}: missing {sorted(missing)}")
    return tuple(entries)


def matches(match: dict[str, Any], setting: dict[str, Any]) -> bool:
    """Every key of ``match`` has the setting's value (a list: one of its values)."""
    for key, want in match.items():
        have = setting.get(key)
        if isinstance(want, list):
            if not any(matches({key: w}, setting) for w in want):
                return False
        elif isinstance(want, float) or isinstance(have, float):
            if have is None or abs(float(have) - float(want)) > 1e-9:
                return False
        elif have != want:
            return False
    return True


def get_preset(method: str, **setting: Any) -> Preset:
    """The merged flags (and each value's source) for ``method`` under ``setting``.

    Args:
        method: a preset file's stem, e.g. ``plremix``.
        setting: the run's setting, e.g. ``dataset="cifar10", noise_mode="sym", r=0.5``.

    Returns:
        A ``Preset``; empty when no entry matches.
    """
    preset = Preset()
    for entry in _entries(method):
        if matches(entry["match"], setting):
            preset.flags.update(entry["flags"])
            preset.sources.update({k: entry["source"] for k in entry["flags"]})
    return preset


def parse_with_preset(parser, method: str, argv=None):
    """Parse ``argv`` (with ``--config`` defaults); when ``--preset`` is given, the preset of the
    parsed setting (``dataset``, ``noise_mode``, ``r``) becomes the defaults and the command line is
    parsed again, so flags given explicitly still win."""
    from lnl.engine.args import parse_with_config

    args = parse_with_config(parser, argv)
    if getattr(args, "preset", False):
        preset = get_preset(method, dataset=args.dataset, noise_mode=args.noise_mode, r=args.r)
        parser.set_defaults(**preset.flags)
        args = parse_with_config(parser, argv)
    return args
