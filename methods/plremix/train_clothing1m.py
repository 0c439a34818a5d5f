"""PLReMix on Clothing1M (``lxysl/PLReMix: train_clothing1m.py @ b0c4ec3``; specs/plremix_dividemix.md
§2.2, §5.10, §5.11). The README's command runs as written::

    python methods/plremix/train_clothing1m.py --dataset clothing1m --data_path PATH_TO_Clothing1M/ --pretrain

Each epoch draws class-balanced 64k subsets (seeded by (seed, epoch, net) here; unseeded in the
original) for the warm-up and for each net's evaluation pass; the labeled/unlabeled sets are sub-lists
of that subset. Logs the clean-val accuracy every epoch and tests (top-1/5) with the **last-epoch**
weights at the end (P12; DivideMix tests its best-val models). ``--fix_p1``: PLR candidates from the
right rows (P1). Unmeasured here: needs the real dataset and a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.cotrain import fit
from lnl.codivide.files import CLOTHING1M, eval_file_loader, file_data
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.engine import default_argument_parser, default_setup, parse_with_config
from methods.plremix import plremix_lib as lib

METHOD = "plremix"
MILESTONES = (40, 80)
WARM_UP = 1


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("PLReMix (Clothing1M)", parents=[default_argument_parser()])
    lib.add_plremix_args(p, dataset="clothing1m", datasets=("clothing1m",), num_classes=14,
                         data_path="~/Documents/Clothing1M", backbone="resnet50", batch_size=64, lr=0.004,
                         wd=1e-3, num_epochs=100, alpha=0.5, lambda_u=0, crl="plr")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(get_args_parser(), argv)


def main(args: argparse.Namespace) -> dict:
    """Train, validate each epoch, test the last-epoch ensemble; returns the results record."""
    lib.resolve_fixes(args)
    args.out = args.out or f"runs/{METHOD}/clothing1m-s{args.seed}"
    log = default_setup(args)
    args.warm_up = WARM_UP if args.warm_up is None else args.warm_up
    args.pretrain = args.arch is None or args.pretrain  # forced on in the original
    root = Path(args.data_path).expanduser()
    train_set = get_dataset("clothing1m", root, "train")
    val_set, test_set = get_dataset("clothing1m", root, "val"), get_dataset("clothing1m", root, "test")
    tf = transforms_for(CLOTHING1M.crops, train_set.mean, train_set.std, aug=args.aug)
    nets, optimizers = lib.build_nets(args, 14)
    method = lib.FilePLReMix(args, nets, optimizers, file_data(train_set), log, recipe=CLOTHING1M,
                             milestones=MILESTONES, penalty=True, tf=tf)
    bs = 2 * args.batch_size
    val = eval_file_loader(val_set, tf["val"], bs, args.num_workers, args.device)
    test = eval_file_loader(test_set, tf["val"], bs, args.num_workers, args.device)

    def final() -> dict:
        res = method.test(test, topk=(1, 5))
        # the original's test() averages per-batch accuracies: both are recorded, named
        return {"test_acc": res["top1"], "test_top5": res["top5"], "test_top1_batchmean": res["top1_batchmean"],
                "test_top5_batchmean": res["top5_batchmean"]}

    record = {"method": METHOD, "dataset": "clothing1m", "noise": "real", "seed": args.seed}
    return fit(args, method, log, test=lambda: {"val_acc": method.test(val)["top1"]}, result=record,
               track="val_acc", final=final)


if __name__ == "__main__":
    main(parse_args())
