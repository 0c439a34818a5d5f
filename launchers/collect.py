"""Gather every run's ``results.jsonl`` under one or more folders into one table (CSV + Markdown):
one row per setting, test accuracy as mean ± std over seeds, and the paper's number beside it
(``launchers/paper_numbers.yaml``, under the method's ``paper_key`` in ``methods/registry.py``). A
setting is everything that changes the result: method, dataset, noise, ``--subset`` (a smoke run,
marked as such), the run's length and the method's flags (from each run's ``args.yaml``; seeds,
paths, devices and logging are not settings). Example::

    python launchers/collect.py runs            # writes runs/results.csv and runs/results.md

A run folder's ``results.jsonl`` gets one line per finished run; the last line counts (a run that
was finished again after a resume is not counted twice).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from lnl.engine.runner import RESULTS, read_records  # noqa: E402
from methods.registry import paper_key  # noqa: E402

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.yaml"
COLUMNS = (
    "method",
    "dataset",
    "noise",
    "seeds",
    "epochs",
    "test_acc",
    "test_std",
    "best_acc",
    "best_std",
    "paper_best",
    "paper_last",
    "seconds",
    "paper_source",
    "subset",
    "settings",
)
# args.yaml keys that do not change the result (or that the noise column already names); any value
# that is a path (contains "/") is left out too: data and output folders differ between machines.
NOT_SETTINGS = {
    "seed",
    "out",
    "resume",
    "resume_id",
    "device",
    "wandb",
    "offline",
    "wo_wandb",
    "tensorboard",
    "config",
    "data_path",
    "data_root",
    "noise_file",
    "noise_mode",
    "r",
    "dataset",
    "subset",
    "knn_backend",
    "gmm_backend",
    "plr_backend",
    "compile",
    "num_workers",
    "threads",
    "eval_freq",
    "num_epochs",
    "epochs",
    "nepoch",
    "max_iteration",
}  # the length: the epochs column


def find_results(roots: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The last lnl record of every ``results.jsonl`` below ``roots`` (each with its ``run_dir``).

    Lines of other schemas are skipped: NMTune's original per-epoch lines can share the file."""
    records = []
    for root in roots:
        for path in sorted(Path(root).rglob(RESULTS)):
            rows = read_records(path)
            if rows:
                flags = run_flags(path.parent)
                record = rows[-1]
                subset = (
                    record.subset if record.subset is not None else flags.get("subset")
                )  # may not say it
                records.append(
                    {
                        **record.to_line(),
                        "subset": subset,
                        "run_dir": str(path.parent),
                        "settings": settings_of(flags),
                    }
                )
    return records


def run_flags(run_dir: Path) -> dict[str, Any]:
    """The run's ``args.yaml`` (empty when absent)."""
    path = Path(run_dir) / "args.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def settings_of(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that change a run's result."""
    return {
        k: v
        for k, v in flags.items()
        if k not in NOT_SETTINGS and not (isinstance(v, str) and "/" in v)
    }


def _setting(r: dict) -> tuple:
    """The grouping key: every seed of one setting, and nothing else, shares it."""
    settings = tuple(sorted((k, repr(v)) for k, v in (r.get("settings") or {}).items()))
    return (
        r["method"],
        r["dataset"],
        str(r["noise"]),
        r.get("subset") or 0,
        str(r.get("epochs", r.get("steps", "?"))),
        settings,
    )


def _differing(groups: Iterable[tuple]) -> dict[tuple, str]:
    """For each group, the flags that tell it apart from the other groups of its method, dataset and noise."""
    families: dict[tuple, list[tuple]] = defaultdict(list)
    for key in groups:
        families[key[:3]].append(key)
    labels = {}
    for keys in families.values():
        values: dict[str, set] = defaultdict(set)
        for key in keys:
            for k, v in dict(key[5]).items():
                values[k].add(v)
        differ = {
            k
            for k, vs in values.items()
            if len(vs) > 1 or any(k not in dict(key[5]) for key in keys)
        }
        for key in keys:
            labels[key] = " ".join(f"{k}={v}" for k, v in key[5] if k in differ)
    return labels


def load_paper_numbers(path: Path = PAPER_NUMBERS) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text()) or []


def paper_number(paper: Sequence[dict], method: str, dataset: str, noise: str) -> dict[str, Any]:
    """The paper row for this setting; a row without ``noise`` matches any noise of its dataset."""
    for row in paper:
        if (
            row["method"] == method
            and row["dataset"] == dataset
            and row.get("noise", noise) == noise
        ):
            return row
    return {}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def summarize(records: Sequence[dict], paper: Sequence[dict] = ()) -> list[dict[str, Any]]:
    """One row per setting (see the module docstring): accuracies in %, mean and sample std over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_setting(r)].append(r)
    labels = _differing(groups)
    rows = []
    for key, runs in sorted(groups.items(), key=lambda item: repr(item[0])):
        method, dataset, noise, subset, epochs, _ = key
        test = _mean_std(
            [r["test_acc"] for r in runs if r.get("test_acc") is not None] or [math.nan]
        )
        best = _mean_std(
            [r["best_acc"] for r in runs if r.get("best_acc") is not None] or [math.nan]
        )
        ref = paper_number(paper, paper_key(method), dataset, noise)
        rows.append(
            {
                "method": method,
                "dataset": dataset,
                "noise": noise,
                "seeds": " ".join(
                    sorted((str(r.get("seed", "?")) for r in runs), key=lambda s: (len(s), s))
                ),
                "epochs": epochs,
                "test_acc": _pct(test[0]),
                "test_std": _pct(test[1]),
                "best_acc": _pct(best[0]),
                "best_std": _pct(best[1]),
                "paper_best": ref.get("best"),
                "paper_last": ref.get("last"),
                "seconds": round(sum(r.get("seconds", 0.0) for r in runs) / len(runs), 1),
                "paper_source": ref.get("source", ""),
                "subset": subset or None,
                "settings": labels[key],
            }
        )
    return rows


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def to_markdown(rows: Sequence[dict]) -> str:
    """A Markdown table: measured last/best accuracy (mean ± std over seeds) beside the paper's."""
    lines = [
        "| method | dataset | noise | seeds | epochs | test acc (%) | best acc (%) | paper best | "
        "paper last | s/run | settings |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        paper = [("—" if r[k] is None else f"{r[k]:.2f}") for k in ("paper_best", "paper_last")]
        smoke = f"smoke run (--subset {r['subset']}) " if r.get("subset") else ""
        lines.append(
            f"| {r['method']} | {r['dataset']} | {r['noise']} | {r['seeds']} | {r['epochs']} | "
            f"{_cell(r['test_acc'], r['test_std'])} | {_cell(r['best_acc'], r['best_std'])} | "
            f"{paper[0]} | {paper[1]} | {r['seconds']} | {(smoke + r.get('settings', '')).strip()} |"
        )
    sources = sorted({r["paper_source"] for r in rows if r["paper_source"]})
    lines += [""] + [f"Paper numbers: {s}" for s in sources] if sources else []
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "roots",
        nargs="+",
        help="folders searched for results.jsonl (e.g. the launcher's --output_dir)",
    )
    p.add_argument(
        "--out", default=None, help="output prefix (default: FIRST_ROOT/results -> .csv and .md)"
    )
    args = p.parse_args(argv)
    for root in args.roots:
        if not Path(root).is_dir():
            p.error(f"{root}: no such folder (give the launcher's --output_dir, e.g. runs)")
    rows = summarize(find_results(args.roots), load_paper_numbers())
    prefix = Path(args.out) if args.out else Path(args.roots[0]) / "results"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_csv(rows, prefix.with_suffix(".csv"))
    markdown = to_markdown(rows)
    prefix.with_suffix(".md").write_text(markdown)
    print(markdown + f"\nwrote {prefix.with_suffix('.csv')} and {prefix.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
