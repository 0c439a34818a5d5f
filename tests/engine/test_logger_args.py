"""MetricLogger fan-out (JSON lines + TensorBoard), resume truncation, and YAML config defaults."""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from lnl.engine import MetricLogger, default_argument_parser, parse_with_config, read_jsonl


def test_logger_writes_jsonl_and_tensorboard(tmp_path, capsys):
    logger = MetricLogger(tmp_path, tensorboard=True)
    for step in range(3):
        logger.log(step, {"test_acc": 0.5 + step / 10, "loss": 1.0}, stream="eval")
    logger.close()
    rows = read_jsonl(tmp_path / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[2]["test_acc"] == pytest.approx(0.7)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert "test_acc" in capsys.readouterr().out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("eval/test_acc")] == pytest.approx([0.5, 0.6, 0.7])


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False, stdout=False)
    for step in range(4):
        logger.log(step, {"x": step}, stream="eval")
    MetricLogger(tmp_path, tensorboard=False, stdout=False, resume_step=2)
    assert [r["step"] for r in read_jsonl(tmp_path / "eval.jsonl")] == [0, 1]


def test_yaml_config_sets_defaults_and_command_line_wins(tmp_path):
    parser = argparse.ArgumentParser(parents=[default_argument_parser()])
    parser.add_argument("--lr", type=float, default=0.1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\nseed_typo: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['seed_typo'\\]"):
        parse_with_config(parser, ["--config", str(cfg)])
    cfg.write_text("lr: 0.5\n")
    assert parse_with_config(parser, ["--config", str(cfg)]).lr == 0.5
    parser.set_defaults(lr=0.1)
    assert parse_with_config(parser, ["--config", str(cfg), "--lr", "0.2"]).lr == 0.2


def test_entry_points_refuse_shared_switches_they_do_not_honour(tmp_path):
    from methods.dmlp import DMLP
    from methods.ieg import main as ieg

    with pytest.raises(ValueError, match="--amp is not supported"):
        DMLP.main(
            DMLP.get_args_parser().parse_args(
                ["--out", str(tmp_path / "d"), "--amp", "--device", "cpu"]
            )
        )
    with pytest.raises(ValueError, match="--compile is not supported"):
        ieg.main(
            ieg.get_args_parser().parse_args(
                ["--out", str(tmp_path / "i"), "--compile", "--device", "cpu"]
            )
        )
    assert (
        not (tmp_path / "d").exists() and not (tmp_path / "i").exists()
    )  # refused before any output


class _FakeWandb:
    """Stands in for the wandb package (not installed here): records what ``wandb.init`` is given."""

    def __init__(self):
        self.inits = []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, *args, **kwargs):
        pass

    def finish(self):
        pass


@pytest.mark.parametrize(
    "flags, expect",
    [
        (dict(), None),
        (dict(wandb=True), dict(id=None, resume="allow", mode=None)),
        (
            dict(wandb_offline=True),
            dict(id=None, resume="allow", mode="offline"),
        ),  # the originals' --offline
        (
            dict(wandb_id="abc123"),
            dict(id="abc123", resume="must", mode=None),
        ),  # PLReMix's --resume_id
    ],
)
def test_offline_and_resume_id_turn_wandb_on(tmp_path, monkeypatch, flags, expect):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    before = os.environ.get("WANDB_MODE")
    MetricLogger(tmp_path, tensorboard=False, stdout=False, **flags).close()
    assert (
        os.environ.get("WANDB_MODE") == before
    )  # offline by argument, not by a process-wide variable
    if expect is None:
        assert fake.inits == []
        return
    (init,) = fake.inits
    assert {k: init[k] for k in ("id", "resume", "mode")} == expect
