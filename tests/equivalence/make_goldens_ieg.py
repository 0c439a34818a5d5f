"""Write IEG's golden fixtures (tests/equivalence/fixtures/ieg/*.npz).

IEG's original is TensorFlow 1.x graph code (google-research/google-research, ``ieg/``), which cannot
run here; its outputs come from ``ieg_reference.py``, a NumPy re-derivation of the TF graph that
cites, function by function, the TF file and code it mirrors. Each fixture records the commit of the
TF file it mirrors (``ieg_reference.COMMITS``). ``--original`` is accepted for symmetry with the
other generators and unused (nothing of the TF code is imported).

    .venv/bin/python tests/equivalence/make_goldens_ieg.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ieg_reference as R  # noqa: E402
from _golden import FIXTURES, det_array, save_golden  # noqa: E402

ORIGINAL = "google-research/google-research:ieg"
GENERATOR = "tests/equivalence/make_goldens_ieg.py"
SEED = 22

# The step fixtures: B = 6 noisy images and 6 probe images of 3×4×4, C = 3, a 48-5-3 stand-in network.
B, C, IMAGE, HIDDEN = 6, 3, (3, 4, 4), 5
STEP_CFG = {
    "num_classes": C,
    "ce_factor": 5.0,
    "consistency_factor": 20.0,
    "grad_eps_init": 0.9,
    "meta_momentum": 0.9,
    "meta_stepsize": 0.1,
    "wd": 5e-4,
}
SCHEDULE_STEPS = [
    0,
    1,
    249,
    250,
    499,
    500,
    501,
    874,
    1249,
    1250,
    1251,
    2374,
    2375,
    2376,
    5000,
    36693,
    100000,
    193681,
    193682,
    199999,
]
WRN_SIZE, WRN_CLASSES, WRN_INPUT = 32, 5, (2, 16, 16, 3)
RESNET_V2 = {
    "block_sizes": (3, 4, 6, 3),
    "num_filters": 4,
    "num_classes": 5,
    "input": (2, 32, 32, 3),
}


def step_inputs(seed: int = SEED) -> dict:
    """Inputs of the step fixtures, keyed as the fixture stores them (float32 draws, used in float64)."""
    d_in = int(np.prod(IMAGE))
    theta = {
        k: det_array(s, seed, f"theta/{k}", scale=0.3 if len(s) > 1 else 0.1)
        for k, s in R.mlp_shapes(d_in, HIDDEN, C).items()
    }
    theta["bn/gamma"] = det_array(
        (HIDDEN,), seed, "theta/bn/gamma", kind="uniform", low=0.5, high=1.5
    )
    momentum = {k: det_array(v.shape, seed, f"momentum/{k}", scale=0.05) for k, v in theta.items()}
    batch = {
        "xw": det_array((B, *IMAGE), seed, "xw"),
        "xs": det_array((B, *IMAGE), seed, "xs"),
        "xp": det_array((B, *IMAGE), seed, "xp"),
        "y": det_array((B,), seed, "y", kind="int", high=C),
        "yp": np.arange(B) % C,
    }
    draws = {
        "pick": det_array((B,), seed, "pick", kind="int", high=B),
        "u": det_array((3 * B,), seed, "u", kind="uniform"),
        "perm": np.random.Generator(np.random.PCG64(seed)).permutation(3 * B),
    }
    return {"theta": theta, "momentum": momentum, "batch": batch, "draws": draws}


def as64(tree: dict) -> dict:
    return {
        k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
        for k, v in tree.items()
    }


def write_steps(out: Path) -> None:
    inp = step_inputs()
    theta, momentum, batch = as64(inp["theta"]), as64(inp["momentum"]), as64(inp["batch"])
    commit = R.COMMITS["model"]
    for name, detach in (("ieg_step", False), ("ieg_step_detach_meta", True)):
        res = R.ieg_step(theta, momentum, batch, inp["draws"], {**STEP_CFG, "detach_meta": detach})
        save_golden(
            out / f"{name}.npz",
            original=ORIGINAL,
            commit=commit,
            generator=GENERATOR,
            **{k: np.asarray(v) for k, v in res.items()},
        )
    res = R.l2r_step(theta, batch, STEP_CFG)
    save_golden(
        out / "l2r_step.npz",
        original=ORIGINAL,
        commit=commit,
        generator=GENERATOR,
        **{k: np.asarray(v) for k, v in res.items()},
    )
    # One optimizer update each way round (supervised: EMA first; IEG/L2R: update first), from θ.
    vec, accum = R.flatten(theta), R.flatten(momentum)
    grad = det_array(vec.shape, SEED, "update/grad").astype(np.float64)
    shadow = det_array(vec.shape, SEED, "update/shadow").astype(np.float64)
    sup = R.supervised_ema_then_update(vec, accum, shadow, grad, 0.05, 0.9, 7)
    ieg = R.ieg_update_then_ema(vec, accum, shadow, grad, 0.05, 0.9, 7)
    save_golden(
        out / "update_ema.npz",
        original=ORIGINAL,
        commit=commit,
        generator=GENERATOR,
        supervised_theta=sup[0],
        supervised_shadow=sup[2],
        ieg_theta=ieg[0],
        ieg_shadow=ieg[2],
    )


def write_schedules(out: Path) -> None:
    steps = np.array(SCHEDULE_STEPS)
    arrays = {
        "steps": steps,
        "cosine_500": [R.cosine_decay_restarts(0.1, s, 500, 1.5, 0.9) for s in steps],
        "cosine_490": [R.cosine_decay_restarts(0.1, s, 490, 1.5, 0.9) for s in steps],
        "cosine_t1": [R.cosine_decay_restarts(0.1, s, 500, 1.0, 1.0) for s in steps],
        "cosine_warmup_980": [R.cosine_warmup(0.1, s, 500, 1.5, 0.9, 980) for s in steps],
        "exponential_500": [R.exponential_decay(0.1, s, 500) for s in steps],
        "cosine_one_200000": [R.cosine_one(0.1, s, 200000) for s in steps],
        "custom_step_100_200": R.custom_step_lrs(0.1, [100, 200], 0.1, 300),
    }
    for first in (500, 490):
        ends, evaluated = R.evaluation_iterations(first, 1.5, 500, 200000)
        arrays[f"cycle_ends_{first}"] = np.array(ends)
        arrays[f"evaluated_{first}"] = np.array(evaluated)
    arrays = {
        k: np.asarray(v, np.float32) if k.startswith(("cos", "exp", "custom")) else v
        for k, v in arrays.items()
    }
    save_golden(
        out / "schedules.npz",
        original=ORIGINAL,
        commit=R.COMMITS["model"],
        generator=GENERATOR,
        **arrays,
    )


def write_crops(out: Path) -> None:
    images = det_array((4, 8, 8, 3), SEED, "crop/images", kind="int", high=256).astype(np.uint8)
    params = det_array((4, 3), SEED, "crop/params", kind="int", high=8)
    weak, strong = [], []
    for img, (top, left, flip) in zip(images, params):
        weak.append(R.weak_view(img, top % 5, left % 5, bool(flip % 2)))
        strong.append(R.strong_crop(img, top, left, bool(flip % 2), fill=128))
    save_golden(
        out / "crops.npz",
        original=ORIGINAL,
        commit=R.COMMITS["utils"],
        generator=GENERATOR,
        images=images,
        params=params,
        weak=np.stack(weak),
        strong=np.stack(strong),
        weak_offsets=R.WEAK_OFFSETS,
        strong_offsets=R.STRONG_OFFSETS,
    )


def write_policies(out: Path) -> None:
    levels = np.arange(11)
    table = np.array([[R.transform_argument(n, lv) for lv in levels] for n in R.TRANSFORM_NAMES])
    save_golden(
        out / "policy_arguments.npz",
        original=ORIGINAL,
        commit=R.COMMITS["transforms"],
        generator=GENERATOR,
        names=np.array(R.TRANSFORM_NAMES),
        arguments=table,
        groups=np.array(R.CIFAR_POLICY_GROUPS),
    )


def tf_weights(variables: dict, seed: int = SEED) -> dict:
    """Variables keyed by their TF names (HWIO kernels): gammas in [0.5, 1.5], small biases, kernels
    with spread 1/sqrt(fan_in)."""
    out = {}
    for name, shape in variables.items():
        if name.endswith("gamma"):
            out[name] = det_array(shape, seed, name, kind="uniform", low=0.5, high=1.5)
        elif len(shape) == 1:
            out[name] = det_array(shape, seed, name, scale=0.1)
        else:
            out[name] = det_array(shape, seed, name, scale=1.0 / np.sqrt(np.prod(shape[:-1])))
    return out


def wrn_weights(seed: int = SEED) -> dict:
    return tf_weights(R.wrn_variables(WRN_SIZE, WRN_CLASSES), seed)


def resnet_v2_weights(seed: int = SEED) -> dict:
    c = RESNET_V2
    return tf_weights(
        R.resnet_v2_variables(c["block_sizes"], c["num_filters"], c["num_classes"]), seed
    )


def write_networks(out: Path) -> None:
    c = RESNET_V2
    weights = {k: v.astype(np.float64) for k, v in resnet_v2_weights().items()}
    images = det_array(c["input"], SEED, "resnet_v2/images").astype(np.float64)
    logits = R.resnet_v2_forward(weights, images, c["block_sizes"], c["num_filters"])
    save_golden(
        out / "resnet50_v2_forward.npz",
        original=ORIGINAL,
        commit=R.COMMITS["resnet50"],
        generator=GENERATOR,
        logits=logits,
        names=np.array(list(weights)),
    )
    weights = {k: v.astype(np.float64) for k, v in wrn_weights().items()}
    images = det_array(WRN_INPUT, SEED, "wrn/images").astype(np.float64)
    logits = R.wrn_forward(weights, images, WRN_SIZE)
    save_golden(
        out / "wrn_forward.npz",
        original=ORIGINAL,
        commit=R.COMMITS["wrn"],
        generator=GENERATOR,
        logits=logits,
        names=np.array(list(weights)),
    )
    fans = R.resnet29_conv_fans()
    stats = np.array([R.glorot_normal_stats(a, b) for a, b in fans])
    save_golden(
        out / "resnet29_init.npz",
        original=ORIGINAL,
        commit=R.COMMITS["wrn"],
        generator=GENERATOR,
        fans=np.array(fans),
        bound_std=stats,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", default=None, help="unused: the TF original cannot run here")
    p.parse_args()
    out = FIXTURES / "ieg"
    write_schedules(out)
    write_crops(out)
    write_policies(out)
    write_networks(out)
    write_steps(out)


if __name__ == "__main__":
    main()
