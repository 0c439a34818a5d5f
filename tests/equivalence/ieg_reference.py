"""A NumPy re-derivation of IEG's TensorFlow 1.x graph (google-research/google-research, ``ieg/``),
the oracle of IEG's golden outputs: TF1 cannot run here, so each function below restates one piece of
the TF code, op for op, and cites the file and the code it mirrors. Math is float64 except where TF's
own arithmetic decides the result (the LR schedules, computed by TF in float32).

Files read (commit of the stored version):
  models/model.py, models/basemodel.py, models/l2rmodel.py   26b140595f6177a634afb5ec0fb953a2a3569705
  models/wrn.py, models/resnet.py, models/cifar10_resnet.py  52560bb16003de2232022bada0b6862168c87523
  models/custom_ops.py                                       05e1d1c257a86adc03e6ac814354c3ce6b14ead2
  models/networks.py, dataset_utils/augmentation_transforms.py 8de59738d37133bc2537b62831674d3929da3c5b
  dataset_utils/utils.py                                     7b6651581a0867cc5a013820eff27385a56b77b9
  models/resnet50.py                                         fd81ee8c9acd2ba8ad0962ab454b43618f007424

Derivatives. ``tf.gradients`` is reverse-mode differentiation; here first derivatives are taken by
the complex step, ``∂f/∂θ_k = Im f(θ + i·h·e_k) / h`` with h = 1e-30, exact to float64 rounding for
the analytic ops these graphs use (ReLU is taken on the real part). The meta step's second-order
term is the vector-Jacobian product TF asks for with ``tf.gradients(static_vars, [target, eps],
grad_ys=grad_meta_vars)``; since ``static_vars = θ − α(μ·m + ∇_θ L_look)`` and ``L_look = Σ_i
target_i·ℓ_i(eps) + R``, that product is, exactly,

    grad_target_i = −α ⟨v, ∇_θ ℓ_i⟩,   grad_eps_i = −α·target_i ⟨v, ∇_θ ∂ℓ_i/∂eps_i⟩,
    ∂ℓ_i/∂eps_i = −Σ_c (y_ic − g_ic) log softmax(z_i)_c,   v = grad_meta_vars = ∇_θ' L_p(θ'),

with g a function of θ (the look-ahead's hand-written cross-entropy keeps its gradient).
"""

from __future__ import annotations

import math

import numpy as np

H = 1e-30  # complex-step size
COMMITS = {
    "model": "26b140595f6177a634afb5ec0fb953a2a3569705",
    "wrn": "52560bb16003de2232022bada0b6862168c87523",
    "custom_ops": "05e1d1c257a86adc03e6ac814354c3ce6b14ead2",
    "transforms": "8de59738d37133bc2537b62831674d3929da3c5b",
    "utils": "7b6651581a0867cc5a013820eff27385a56b77b9",
    "resnet50": "fd81ee8c9acd2ba8ad0962ab454b43618f007424",
}


# ================================================================== LR schedules (basemodel.py)
def cosine_decay_restarts(
    lr0: float, step: int, first: int, t_mul: float, m_mul: float
) -> np.float32:
    """TF ``tf.train.cosine_decay_restarts(lr0, global_step, first, t_mul, m_mul)`` (alpha 0), float32
    throughout as TF builds it (basemodel.py ``set_lr_schedule``, branch ``startswith('cosine')``)."""
    f = np.float32
    frac = f(step) / f(first)
    if t_mul == 1.0:
        i = np.floor(frac)
        frac = frac - i
    else:
        i = np.floor(np.log(f(1) - frac * (f(1) - f(t_mul))) / np.log(f(t_mul)))
        sum_r = (f(1) - f(t_mul) ** i) / (f(1) - f(t_mul))
        frac = (frac - sum_r) / f(t_mul) ** i
    decayed = f(0.5) * f(m_mul) ** i * (f(1) + np.cos(f(math.pi) * frac))
    return f(lr0) * ((f(1) - f(0)) * decayed + f(0))


def cosine_warmup(
    lr0: float, step: int, first: int, t_mul: float, m_mul: float, warmup_steps: int
) -> np.float32:
    """``cosine_warmup``: cosine on ``max(0, step − warmup)``; below ``warmup`` the ramp
    ``slope·step`` with ``slope = (lr0 − 0)/warmup`` (a Python float, cast to float32 by TF)."""
    if step < warmup_steps:
        return np.float32(lr0 / warmup_steps) * np.float32(step)
    return cosine_decay_restarts(lr0, max(0, step - warmup_steps), first, t_mul, m_mul)


def exponential_decay(lr0: float, step: int, period: int) -> np.float32:
    """``exponential``: ``tf.train.exponential_decay(lr0, step, period, 0.9, staircase=True)``."""
    return np.float32(lr0) * np.float32(0.9) ** np.floor(np.float32(step) / np.float32(period))


def cosine_one(lr0: float, step: int, total: int) -> np.float32:
    """``cosine_one``: ``tf.train.cosine_decay(lr0, step, max_iteration)``."""
    f = np.float32
    frac = f(min(step, total)) / f(total)
    return f(lr0) * (f(0.5) * (f(1) + np.cos(f(math.pi) * frac)))


def custom_step_lrs(lr0: float, boundaries: list[int], rate: float, iterations: int) -> np.ndarray:
    """The LR each iteration 1..``iterations`` runs with: ``train()`` calls ``update_learning_rate(it)``
    before ``sess.run``; at ``it`` in ``decay_steps`` the variable becomes ``lr0·rate^(index+1)``."""
    lr, out = np.float32(lr0), []
    for it in range(1, iterations + 1):
        if it in boundaries:
            lr = np.float32(lr0 * rate ** (boundaries.index(it) + 1))
        out.append(lr)
    return np.array(out, np.float32)


def evaluation_iterations(
    first: int, t_mul: float, eval_freq: int, max_iteration: int
) -> tuple[list[int], list[int]]:
    """basemodel.py ``time_for_evaluation`` run over iterations 1..max (lr_schedule cosine): returns
    (iterations where ``do`` is set, i.e. the cycle ends it estimates, all evaluated iterations)."""
    cos_eval_step, cos_eval_tot_step = first, 1
    ends, evaluated = [], []
    for it in range(1, max_iteration + 1):
        do = False
        if it == max(1, cos_eval_tot_step - 1):
            cos_eval_tot_step += cos_eval_step
            cos_eval_step = round(cos_eval_step * t_mul)
            do = True
            ends.append(it)
        if it % eval_freq == 0 or it == 1 or do:
            evaluated.append(it)
    return ends, evaluated


# ================================================================== crops (dataset_utils)
def weak_view(img: np.ndarray, offset_h: int, offset_w: int, flip: bool) -> np.ndarray:
    """utils.py ``cifar_process`` on one HxWx3 image in [0, 1]: ``resize_image_with_crop_or_pad`` to
    H+4 (zeros, 2 px per side), ``random_crop`` at (offset_h, offset_w) in 0..4
    (``random_uniform(maxval = 36 − 32 + 1)``), ``random_flip_left_right``."""
    h, w, _ = img.shape
    padded = np.zeros((h + 4, w + 4, 3), img.dtype)
    padded[2 : 2 + h, 2 : 2 + w] = img
    out = padded[offset_h : offset_h + h, offset_w : offset_w + w]
    return out[:, ::-1] if flip else out


WEAK_OFFSETS = np.arange(0, 36 - 32 + 1)  # tf.image.random_crop: offsets uniform in [0, limit)


def strong_crop(img: np.ndarray, top: int, left: int, flip: bool, fill: float) -> np.ndarray:
    """augmentation_transforms.py ``zero_pad_and_crop(img, 4)`` then ``random_flip``: pad 4 of
    ``fill`` (0 in [−1, 1] = grey), ``top, left = np.random.randint(0, 8)``, flip."""
    h, w, _ = img.shape
    padded = np.full((h + 8, w + 8, 3), fill, img.dtype)
    padded[4 : 4 + h, 4 : 4 + w] = img
    out = padded[top : top + h, left : left + w]
    return out[:, ::-1] if flip else out


STRONG_OFFSETS = np.arange(0, 2 * 4)  # np.random.randint(low=0, high=2 * amount): high exclusive


# ================================================================== losses (model.py, custom_ops.py)
def softmax(z):
    e = np.exp(z - z.real.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(z):
    s = z - z.real.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def logit_norm(v):
    """custom_ops.py ``logit_norm``: ``v·rsqrt(mean(v²) + 1e-8)`` over the whole tensor."""
    return v / np.sqrt((v * v).mean() + 1e-8)


def guess_label(logits_weak, logits_strong, temp=0.5):
    """model.py ``IEG.guess_label`` on ``concat([logits, aug_logits])`` with nu = 2: logit norm per
    split, mean softmax, sharpening ``p^(1/T)`` renormalised."""
    p = 0.5 * (softmax(logit_norm(logits_weak)) + softmax(logit_norm(logits_strong)))
    t = p ** (1.0 / temp)
    return t / t.sum(1, keepdims=True)


def mixup(x, t, mix, index):
    """custom_ops.py ``MixMode('xxy.yxy').augment_pair`` with its draws given: ``mix`` the per-row
    ``max(u^(1/β)/2, 1 − u^(1/β)/2)``, ``index`` the ``tf.random.shuffle`` permutation."""
    mx = mix.reshape(-1, *([1] * (x.ndim - 1)))
    return x * mx + x[index] * (1 - mx), t * mix[:, None] + t[index] * (1 - mix[:, None])


def mixup_coefficient(u, beta=0.5):
    m = u ** (1.0 / beta) / 2
    return np.maximum(m, 1 - m)


def softmax_ce(labels, logits):
    """``softmax_cross_entropy_with_logits_v2`` per row."""
    return -(labels * log_softmax(logits)).sum(-1)


def crossentropy_minimize(mixed_logits, mixed_targets, b, ce_factor):
    """model.py ``crossentropy_minimize`` after the forward: logit norm per split [B | B | B], mean
    CE on the probe split plus ``ce_factor`` × mean CE on the other 2B rows (``tf.losses`` mean)."""
    parts = [
        logit_norm(mixed_logits[:b]),
        logit_norm(mixed_logits[b : 2 * b]),
        logit_norm(mixed_logits[2 * b :]),
    ]
    u_logit = np.concatenate(parts[1:])
    l_loss = softmax_ce(mixed_targets[:b], parts[0]).mean()
    u_loss = softmax_ce(mixed_targets[b:], u_logit).mean()
    return l_loss + u_loss * ce_factor


def consistency_loss(logits, aug_logits, factor, num_classes):
    """model.py ``consistency_loss``: ``mean(q(log q − log p̂))·C·factor``, q from sg(logits)."""
    q = softmax(logits)
    kl = q * (log_softmax(logits) - log_softmax(aug_logits))
    return kl.mean() * num_classes * factor


def meta_weights(grad_target, grad_eps, init_eps_val):
    """model.py ``meta_optimize`` tail: ``raw = target − grad_target − 1/B`` clipped at 0,
    normalised with +1e-5; ``new_eps = 1[grad_eps < 0]``."""
    raw = np.full_like(grad_target, init_eps_val) - grad_target - init_eps_val
    unorm = np.clip(raw, 0, np.inf)
    return unorm / (unorm.sum() + 0.00001), np.where(grad_eps < 0, 1.0, 0.0), unorm


# ================================================================== a small stand-in network
# The meta step and the losses do not depend on the architecture; the fixtures use a small
# network (flatten -> dense -> batch norm (training mode, batch statistics) -> ReLU -> dense) whose
# variables stand for WRN's ``net.trainable_variables`` (all decayed with wd, as WRN does).
def mlp_shapes(d_in, hidden, classes):
    return {
        "dense1/kernel": (d_in, hidden),
        "dense1/bias": (hidden,),
        "bn/gamma": (hidden,),
        "bn/beta": (hidden,),
        "dense2/kernel": (hidden, classes),
        "dense2/bias": (classes,),
    }


def mlp_forward(theta: dict, images):
    """Training-mode forward (TF fused batch norm: batch mean, biased variance, eps 1e-5)."""
    x = images.reshape(images.shape[0], -1)
    hdn = x @ theta["dense1/kernel"] + theta["dense1/bias"]
    mean = hdn.mean(0)
    var = ((hdn - mean) ** 2).mean(0)
    hdn = (hdn - mean) / np.sqrt(var + 1e-5) * theta["bn/gamma"] + theta["bn/beta"]
    hdn = np.where(hdn.real > 0, hdn, 0)
    return hdn @ theta["dense2/kernel"] + theta["dense2/bias"]


def l2_loss_sum(theta: dict, wd: float):
    """custom_ops.py ``decay_weights``: ``wd·Σ tf.nn.l2_loss(v)`` = ``wd·Σ‖v‖²/2`` (WRN's
    ``regularization_loss`` and ``MetaImage.get_regularization_loss``)."""
    return wd * sum((v * v).sum() / 2 for v in theta.values())


def flatten(theta: dict) -> np.ndarray:
    return np.concatenate([v.ravel() for v in theta.values()])


def unflatten(vec, like: dict) -> dict:
    out, at = {}, 0
    for k, v in like.items():
        out[k] = vec[at : at + v.size].reshape(v.shape)
        at += v.size
    return out


def complex_grad(fn, theta: dict) -> np.ndarray:
    """Jacobian of ``fn(theta) -> array[...]`` by the complex step: shape ``[P, *fn.shape]``."""
    flat = flatten(theta).astype(np.complex128)
    rows = []
    for k in range(flat.size):
        probe = flat.copy()
        probe[k] += 1j * H
        rows.append(np.imag(fn(unflatten(probe, theta))) / H)
    return np.stack(rows)


# ================================================================== the IEG step (model.py)
def ieg_step(theta, momentum, batch, draws, cfg):
    """model.py ``IEG.train_step`` / ``step_fn`` for one replica: returns the meta outputs, the losses
    and ``∇_θ net_loss`` (the gradient ``apply_gradients`` receives; ``net_loss`` includes R).

    Args:
        theta, momentum: variable name -> float64 array (momentum: the optimizer's accumulator).
        batch: ``xw`` (weak view), ``xs`` (strong view), ``y`` noisy labels, ``xp``/``yp`` probe.
        draws: ``pick`` (probe rows for MixUp), ``u`` (3B uniforms), ``perm`` (3B permutation).
        cfg: ``num_classes``, ``ce_factor``, ``consistency_factor``, ``grad_eps_init``,
            ``meta_momentum``, ``meta_stepsize``, ``wd`` (net.wd), ``detach_meta`` (stop g in the
            look-ahead as well: the port's opt-in flag).
    """
    c, b = cfg["num_classes"], len(batch["y"])
    onehot = np.eye(c)[batch["y"]]
    probe_onehot = np.eye(c)[batch["yp"]]
    real = {k: v.astype(np.float64) for k, v in theta.items()}

    def views(th):
        z, zs = mlp_forward(th, batch["xw"]), mlp_forward(th, batch["xs"])
        return z, zs, guess_label(z, zs)

    z0, zs0, g0 = views(real)

    # ---- meta_optimize: target = 1/B, eps = grad_eps_init; look-ahead with g attached
    init_eps_val, lam0 = 1.0 / b, cfg["grad_eps_init"]

    def look_terms(th):
        z, _, g = views(th)
        if cfg["detach_meta"]:
            g = g0
        mixed = lam0 * onehot + (1 - lam0) * g
        ls = log_softmax(z)
        net_cost = -(mixed * ls).sum(1)
        d_eps = -((onehot - g) * ls).sum(1)  # ∂ net_cost_i / ∂ eps_i
        return np.concatenate([net_cost, d_eps])

    jac = complex_grad(look_terms, real)  # [P, 2B]
    grad_cost, grad_deps = jac[:, :b], jac[:, b:]
    reg_grad = cfg["wd"] * flatten(real)  # ∇ of wd·Σ‖θ‖²/2
    var_grads = grad_cost.sum(1) * init_eps_val + reg_grad
    actual = (
        cfg["meta_momentum"] * flatten(momentum) + var_grads
        if cfg["meta_momentum"] > 0
        else var_grads
    )
    static_vars = unflatten(flatten(real) - cfg["meta_stepsize"] * actual, real)

    def meta_loss_fn(th):
        g_logits = mlp_forward(th, batch["xp"])
        return softmax_ce(probe_onehot, g_logits).mean() + l2_loss_sum(th, cfg["wd"])

    meta_loss = meta_loss_fn(static_vars)
    v = complex_grad(meta_loss_fn, static_vars)  # grad_meta_vars, flattened
    grad_target = -cfg["meta_stepsize"] * (grad_cost.T @ v)
    grad_eps = -cfg["meta_stepsize"] * init_eps_val * (grad_deps.T @ v)
    weight, new_eps, raw = meta_weights(grad_target, grad_eps, init_eps_val)

    # ---- unsupervised_loss: MixUp over [probe picks; x; x̂] with stop-gradient targets, KL
    mix = mixup_coefficient(draws["u"])

    def net_loss(th):
        z, zs, _ = views(th)
        x_all = np.concatenate([batch["xp"][draws["pick"]], batch["xw"], batch["xs"]])
        t_all = np.concatenate(
            [probe_onehot[draws["pick"]], g0, g0]
        )  # tf.stop_gradient(guessed_label)
        x_mix, t_mix = mixup(x_all, t_all, mix, draws["perm"])
        xe = crossentropy_minimize(mlp_forward(th, x_mix), t_mix, b, cfg["ce_factor"])
        cs = consistency_loss(z0, zs, cfg["consistency_factor"], c)  # stop_gradient(logits)
        # train_step: tf.losses.softmax_cross_entropy stops its labels' gradient (g0, not g(θ))
        net_cost = softmax_ce(new_eps[:, None] * onehot + (1 - new_eps[:, None]) * g0, z)
        net_cost2 = softmax_ce(lam0 * onehot + (1 - lam0) * g0, z)
        xemin = (net_cost.mean() + (net_cost2 * weight).sum()) / 2
        total = xemin + xe + cs + l2_loss_sum(th, cfg["wd"])
        return np.array([total, xemin, xe, cs])

    losses = net_loss(real)
    grads = complex_grad(lambda th: net_loss(th)[:1], real)[:, 0]
    return {
        "weight": weight,
        "new_eps": new_eps,
        "raw_weight": raw,
        "meta_loss": meta_loss,
        "grad_target": grad_target,
        "grad_eps": grad_eps,
        "pseudo_label": g0,
        "logits": z0,
        "loss": losses[0],
        "xemin": losses[1],
        "mixup": losses[2],
        "consistency": losses[3],
        "grad": grads,
        "mix": mix,
    }


def l2r_step(theta, batch, cfg):
    """l2rmodel.py ``L2R.meta_optimize`` + ``train_step``: target = 0, look-ahead
    ``θ' = θ − α∇(Σ target_i ℓ_i + R)`` (R included, no momentum), weights from ``−grad_target``;
    ``net_loss = Σ ω_i ℓ_i + R``."""
    c = cfg["num_classes"]
    onehot, probe_onehot = np.eye(c)[batch["y"]], np.eye(c)[batch["yp"]]
    real = {k: v.astype(np.float64) for k, v in theta.items()}
    grad_cost = complex_grad(lambda th: softmax_ce(onehot, mlp_forward(th, batch["xw"])), real)
    static_vars = unflatten(
        flatten(real) - cfg["meta_stepsize"] * (cfg["wd"] * flatten(real)), real
    )

    def meta_loss_fn(th):
        return softmax_ce(probe_onehot, mlp_forward(th, batch["xp"])).mean() + l2_loss_sum(
            th, cfg["wd"]
        )

    v = complex_grad(meta_loss_fn, static_vars)
    grad_target = -cfg["meta_stepsize"] * (grad_cost.T @ v)
    unorm = np.clip(-grad_target, 0, np.inf)
    weight = unorm / (unorm.sum() + 0.00001)

    def net_loss(th):
        return np.array(
            [
                (softmax_ce(onehot, mlp_forward(th, batch["xw"])) * weight).sum()
                + l2_loss_sum(th, cfg["wd"])
            ]
        )

    return {
        "weight": weight,
        "meta_loss": meta_loss_fn(static_vars),
        "loss": net_loss(real)[0],
        "grad": complex_grad(net_loss, real)[:, 0],
    }


def momentum_update(theta_vec, accum, grad, lr, momentum):
    """``tf.train.MomentumOptimizer`` (no Nesterov): ``accum = μ·accum + g``; ``θ −= lr·accum``."""
    accum = momentum * accum + grad
    return theta_vec - lr * accum, accum


def ema_apply(shadow, theta_vec, num_updates):
    """``ExponentialMovingAverage(0.999, num_updates)``: decay ``min(0.999, (1+n)/(10+n))``."""
    decay = min(0.999, (1.0 + num_updates) / (10.0 + num_updates))
    return shadow - (1 - decay) * (shadow - theta_vec)


def supervised_ema_then_update(theta_vec, accum, shadow, grad, lr, momentum, global_step):
    """basemodel.py ``train_step``: the EMA op is a control dependency of the minimizer, so it averages
    the weights **before** the update, with num_updates = the global step before its increment."""
    shadow = ema_apply(shadow, theta_vec, global_step)
    theta_vec, accum = momentum_update(theta_vec, accum, grad, lr, momentum)
    return theta_vec, accum, shadow


def ieg_update_then_ema(theta_vec, accum, shadow, grad, lr, momentum, global_step):
    """model.py ``train_step``: ``ema.apply`` under ``control_dependencies([minimizer_op])``: after the
    update, num_updates = the incremented global step."""
    theta_vec, accum = momentum_update(theta_vec, accum, grad, lr, momentum)
    return theta_vec, accum, ema_apply(shadow, theta_vec, global_step + 1)


# ================================================================== networks (wrn.py, cifar10_resnet.py)
def conv2d_same(x, w, stride):
    """``tf.nn.conv2d(padding='SAME')`` NHWC x HWIO: total padding ``max((ceil(n/s)−1)·s + k − n, 0)``,
    the smaller half before."""
    k = w.shape[0]
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :]
            out += patch @ w[i, j]
    return out


def batch_norm_train(x, gamma, beta):
    """``tf.layers.batch_normalization(training=True, fused=True)``: batch statistics over N, H, W."""
    mean = x.mean((0, 1, 2))
    var = x.var((0, 1, 2))
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def avg_pool_valid(x, k):
    n, h, w, c = x.shape
    return x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c).mean((2, 4))


def zero_pad_channels(x, cin, cout):
    """custom_ops.py ``zero_pad``: ``(cout − cin)//2`` zero channels on both sides."""
    p = (cout - cin) // 2
    return np.pad(x, ((0, 0), (0, 0), (0, 0), (p, p)))


def wrn_variables(wrn_size: int, num_classes: int) -> dict[str, tuple]:
    """The trainable variables of wrn.py ``WRN.__call__`` (scope ``model``), in creation order."""
    filters = [min(wrn_size, 16), wrn_size, wrn_size * 2, wrn_size * 4]
    out = {"model/init/init_conv/weights": (3, 3, 3, filters[0])}

    def bn(scope, ch):
        out[f"{scope}/gamma"], out[f"{scope}/beta"] = (ch,), (ch,)

    for block in range(1, 4):
        for i in range(4):
            cin = filters[block - 1] if i == 0 else filters[block]
            unit = f"model/unit_{block}_{i}"
            bn(
                f"{unit}/{'shared_activation' if block == 1 and i == 0 else 'residual_only_activation'}/init_bn",
                cin,
            )
            out[f"{unit}/sub1/conv1/weights"] = (3, 3, cin, filters[block])
            bn(f"{unit}/sub2/bn2", filters[block])
            out[f"{unit}/sub2/conv2/weights"] = (3, 3, filters[block], filters[block])
    bn("model/unit_last/final_bn", filters[3])
    out["model/unit_last/FC/weights"] = (filters[3], num_classes)
    out["model/unit_last/FC/biases"] = (num_classes,)
    return out


def wrn_forward(v: dict, images, wrn_size: int):
    """wrn.py ``WRN.__call__(training=True)`` on NHWC ``images``."""
    filters = [min(wrn_size, 16), wrn_size, wrn_size * 2, wrn_size * 4]
    strides = [1, 2, 2]

    def bn_relu(x, scope):
        return np.maximum(batch_norm_train(x, v[f"{scope}/gamma"], v[f"{scope}/beta"]), 0)

    def residual_block(x, unit, cin, cout, stride, activate_before_residual):
        if activate_before_residual:
            x = bn_relu(x, f"{unit}/shared_activation/init_bn")
            orig, block = x, x
        else:
            orig, block = x, bn_relu(x, f"{unit}/residual_only_activation/init_bn")
        block = conv2d_same(block, v[f"{unit}/sub1/conv1/weights"], stride)
        block = conv2d_same(bn_relu(block, f"{unit}/sub2/bn2"), v[f"{unit}/sub2/conv2/weights"], 1)
        if cin != cout:
            orig = zero_pad_channels(avg_pool_valid(orig, stride), cin, cout)
        return orig + block

    def res_add(cin, cout, stride, x, orig):
        if cin != cout:
            orig = zero_pad_channels(avg_pool_valid(orig, stride), cin, cout)
        x = x + orig
        return x, x

    x = conv2d_same(images, v["model/init/init_conv/weights"], 1)
    first_x = orig_x = x
    for block in range(1, 4):
        x = residual_block(
            x,
            f"model/unit_{block}_0",
            filters[block - 1],
            filters[block],
            strides[block - 1],
            block == 1,
        )
        for i in range(1, 4):
            x = residual_block(
                x, f"model/unit_{block}_{i}", filters[block], filters[block], 1, False
            )
        x, orig_x = res_add(filters[block - 1], filters[block], strides[block - 1], x, orig_x)
    x, _ = res_add(filters[0], filters[3], int(np.prod(strides)), x, first_x)
    x = bn_relu(x, "model/unit_last/final_bn").mean((1, 2))
    return x @ v["model/unit_last/FC/weights"] + v["model/unit_last/FC/biases"]


def glorot_normal_stats(fan_in: int, fan_out: int) -> tuple[float, float]:
    """cifar10_resnet.py ``tf.initializers.glorot_normal()`` = ``VarianceScaling(1, 'fan_avg',
    'truncated_normal')``: σ = sqrt(1/fan_avg)/0.87962566103423978 truncated at ±2σ; returns
    (the truncation bound 2σ, the resulting standard deviation sqrt(1/fan_avg))."""
    fan_avg = (fan_in + fan_out) / 2.0
    sigma = math.sqrt(1.0 / fan_avg) / 0.87962566103423978
    return 2 * sigma, math.sqrt(1.0 / fan_avg)


def resnet29_conv_fans(num_res_blocks: int = 3, num_filters_in: int = 16) -> list[tuple[int, int]]:
    """(fan_in, fan_out) = (k²·C_in, k²·C_out) of every conv ``resnet_model_fn`` creates
    (cifar10_resnet.py), in creation order: the stem, then per block the three bottleneck convs and,
    on the first block of a stage, the 1×1 projection."""
    fans, channels = [(9 * 3, 9 * num_filters_in)], num_filters_in
    for stage in range(3):
        out = num_filters_in * (4 if stage == 0 else 2)
        for block in range(num_res_blocks):
            fans += [
                (channels, num_filters_in),
                (9 * num_filters_in, 9 * num_filters_in),
                (num_filters_in, out),
            ]
            if block == 0:
                fans.append((channels, out))
            channels = out
        num_filters_in = out
    return fans


# ================================================================== strong-view policies (dataset_utils)
def transform_argument(name: str, level: int) -> float:
    """The argument augmentation_transforms.py passes to PIL for op ``name`` at ``level`` (before the
    random sign of Rotate/Shear/Translate): ``float_parameter(level, m) = level·m/10``,
    ``int_parameter(level, m) = int(level·m/10)``; ``_rotate_impl`` int(·, 30), ``_shear_*_impl``
    float(·, 0.3), ``_translate_*_impl`` int(·, 10), ``_enhancer_impl`` float(·, 1.8) + .1,
    ``_posterize_impl`` 4 − int(·, 4) bits, ``_solarize_impl`` 256 − int(·, 256), ``_cutout_pil_impl``
    int(·, 20)."""
    if name == "Rotate":
        return int(level * 30 / 10)
    if name in ("ShearX", "ShearY"):
        return float(level) * 0.3 / 10
    if name in ("TranslateX", "TranslateY"):
        return int(level * 10 / 10)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return float(level) * 1.8 / 10 + 0.1
    if name == "Posterize":
        return 4 - int(level * 4 / 10)
    if name == "Solarize":
        return 256 - int(level * 256 / 10)
    if name == "Cutout":
        return int(level * 20 / 10)
    return 0.0


TRANSFORM_NAMES = (
    "Rotate",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "Posterize",
    "Solarize",
    "Cutout",
    "AutoContrast",
    "Equalize",
    "Invert",
)
CIFAR_POLICY_GROUPS = (
    20,
    35,
    40,
)  # autoaugment.py cifar10_policies: exp0s, exp1s, exp2s (5 per exp)


# ================================================================== ResNet-50 v2 (models/resnet50.py)
def _tf_layer_name(kind: str, counts: dict) -> str:
    """tf.layers auto-naming: ``conv2d``, ``conv2d_1``, … in creation order."""
    n = counts.get(kind, 0)
    counts[kind] = n + 1
    return kind if n == 0 else f"{kind}_{n}"


def resnet_v2_variables(block_sizes, num_filters: int, num_classes: int) -> dict[str, tuple]:
    """``ImagenetModelv2`` variables (scope ``model/resnet_model``) in creation order: stem conv, then
    per bottleneck v2 block BN, [projection conv], conv 1×1, BN, conv 3×3, BN, conv 1×1; final BN,
    dense."""
    counts, out, pre = {}, {}, "model/resnet_model"

    def conv(k, cin, cout):
        out[f"{pre}/{_tf_layer_name('conv2d', counts)}/kernel"] = (k, k, cin, cout)

    def bn(ch):
        name = _tf_layer_name("batch_normalization", counts)
        out[f"{pre}/{name}/gamma"], out[f"{pre}/{name}/beta"] = (ch,), (ch,)

    conv(7, 3, num_filters)
    cin = num_filters
    for i, blocks in enumerate(block_sizes):
        filters = num_filters * 2**i
        for b in range(blocks):
            bn(cin)
            if b == 0:
                conv(1, cin, 4 * filters)
            conv(1, cin, filters)
            bn(filters)
            conv(3, filters, filters)
            bn(filters)
            conv(1, filters, 4 * filters)
            cin = 4 * filters
    bn(cin)
    out[f"{pre}/dense/kernel"], out[f"{pre}/dense/bias"] = (cin, num_classes), (num_classes,)
    return out


def conv2d_fixed_padding(x, w, stride):
    """resnet50.py ``conv2d_fixed_padding``: stride > 1 pads (k−1)//2 before, the rest after, then
    'VALID'; stride 1 is 'SAME'."""
    k = w.shape[0]
    if stride == 1:
        return conv2d_same(x, w, 1)
    xp = np.pad(
        x,
        (
            (0, 0),
            ((k - 1) // 2, k - 1 - (k - 1) // 2),
            ((k - 1) // 2, k - 1 - (k - 1) // 2),
            (0, 0),
        ),
    )
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(k):
        for j in range(k):
            out += xp[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :] @ w[i, j]
    return out


def max_pool_same(x, k, stride):
    """``max_pooling2d(padding='SAME')``: padding split with the smaller half before, pads never win."""
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    out = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(
                out, xp[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :]
            )
    return out


def resnet_v2_forward(v: dict, images, block_sizes, num_filters: int):
    """``Model.__call__(training=True)`` with resnet_version 2, bottleneck, channels_last: stem conv 7/2
    (no BN in v2), max pool 3/2 'SAME', ``block_layer``s of ``_bottleneck_block_v2``, BN-ReLU, mean, dense."""
    names = iter(k for k in v if not k.endswith(("beta", "bias")))
    nxt = lambda: next(names)  # noqa: E731  (creation order)

    def bn_relu(x):
        gamma = nxt()
        return np.maximum(batch_norm_train(x, v[gamma], v[gamma[:-5] + "beta"]), 0)

    x = conv2d_fixed_padding(images, v[nxt()], 2)
    x = max_pool_same(x, 3, 2)
    for i, blocks in enumerate(block_sizes):
        for b in range(blocks):
            stride = (1 if i == 0 else 2) if b == 0 else 1
            shortcut = x
            pre = bn_relu(x)
            if b == 0:
                shortcut = conv2d_fixed_padding(pre, v[nxt()], stride)
            out = conv2d_fixed_padding(pre, v[nxt()], 1)
            out = conv2d_fixed_padding(bn_relu(out), v[nxt()], stride)
            out = conv2d_fixed_padding(bn_relu(out), v[nxt()], 1)
            x = out + shortcut
    x = bn_relu(x).mean((1, 2))
    kernel = nxt()
    return x @ v[kernel] + v[kernel[:-6] + "bias"]
