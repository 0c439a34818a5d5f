"""Tests of lnl.ops.gmm_fit / gmm_clean_prob against scikit-learn (the oracle) and across backends.

sklearn gets the same initial responsibilities through a subclass whose ``_initialize_parameters``
calls sklearn's own ``_initialize(X, resp)`` (the M-step after its k-means labels), so everything
after the k-means labels is sklearn's code. The ``kmeans`` init is also compared end to end with
``GaussianMixture(random_state=seed)``. Real loss vectors: tests/ops/fixtures/gmm_cifar10_losses.npz
(see make_gmm_losses.py there).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from lnl import _ext
from lnl.ops import GMMParams, gmm_clean_prob, gmm_fit, gmm_fit_reference
from lnl.ops import gmm as gmm_mod

FIXTURE = Path(__file__).parent / "fixtures" / "gmm_cifar10_losses.npz"
DIVIDEMIX = dict(max_iter=10, tol=1e-2, reg_covar=5e-4)
HAS_CPU = _ext.has_kernel("gmm_em", "CPU")
HAS_CUDA = torch.cuda.is_available() and _ext.has_kernel("gmm_em", "CUDA")
# The sklearn parity tests hold the reference and the compiled CPU kernel to the tolerances.
SKLEARN_BACKENDS = [
    "reference",
    pytest.param("cpu", marks=pytest.mark.skipif(not HAS_CPU, reason="no CPU kernel")),
]


class GivenRespGMM(GaussianMixture):
    """sklearn's GaussianMixture started from given responsibilities via its own ``_initialize``."""

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp0_, xp=xp)


def sklearn_fit(x: np.ndarray, resp0: np.ndarray | None = None, seed: int = 0, **kw):
    cls = GaussianMixture if resp0 is None else GivenRespGMM
    gm = cls(n_components=kw.pop("n_components", 2), random_state=seed, **kw)
    gm.resp0_ = resp0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x)
    return gm, gm.predict_proba(x)


def synth_losses(n: int, d: int, seed: int) -> np.ndarray:
    """kernels_and_anchors.md's benchmark data: Gamma(1, 0.05) clean, N(2.5, 0.8) clipped noisy, min-max."""
    rng = np.random.default_rng(seed)
    cols = []
    for _ in range(d):
        loss = np.concatenate(
            [rng.gamma(1.0, 0.05, n // 2), np.clip(rng.normal(2.5, 0.8, n - n // 2), 0, None)]
        )
        rng.shuffle(loss)
        cols.append((loss - loss.min()) / (loss.max() - loss.min()))
    return np.stack(cols, 1)


# The fixture's snapshots: 50 % noise after epochs 2 and 5, and 20 / 80 / 90 % after epoch 5.
SNAPSHOTS = ["losses_ep2", "losses_ep5", "r20_ep5", "r80_ep5", "r90_ep5"]


def real_losses(d: int, key: str = "losses_ep5") -> np.ndarray:
    loss = np.load(FIXTURE)[key][:, :d].astype(np.float64)
    return (loss - loss.min(0)) / (loss.max(0) - loss.min(0))


def random_resp(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet([0.5, 0.5], n)


def assert_matches_sklearn(res, gm, proba, rtol, patol, g=0):
    np.testing.assert_allclose(
        res.weights[g].double().numpy(), gm.weights_, rtol=rtol, atol=rtol * 1e-2
    )
    np.testing.assert_allclose(
        res.means[g].double().numpy(), gm.means_, rtol=rtol, atol=rtol * 1e-2
    )
    np.testing.assert_allclose(
        res.covs[g].double().numpy(), gm.covariances_, rtol=rtol, atol=rtol * 1e-3
    )
    np.testing.assert_allclose(res.resp[g].double().numpy(), proba, atol=patol, rtol=0)
    assert int(res.n_iter[g]) == gm.n_iter_ and bool(res.converged[g]) == gm.converged_


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("source", ["synthetic", "real"])
@pytest.mark.parametrize("settings", [DIVIDEMIX, dict(max_iter=100, tol=1e-3, reg_covar=1e-6)])
@pytest.mark.parametrize("backend", SKLEARN_BACKENDS)
def test_matches_sklearn_given_resp_float64(d, source, settings, backend):
    x = synth_losses(4000, d, 1) if source == "synthetic" else real_losses(d)
    resp0 = random_resp(len(x), 2)
    gm, proba = sklearn_fit(x, resp0, **settings)
    res = gmm_fit(
        torch.from_numpy(x)[None], init=torch.from_numpy(resp0)[None], backend=backend, **settings
    )
    assert_matches_sklearn(res, gm, proba, rtol=1e-5, patol=1e-4)
    assert abs(float(res.lower_bound[0]) - gm.lower_bound_) < 1e-9


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("snapshot", SNAPSHOTS)
@pytest.mark.parametrize("backend", SKLEARN_BACKENDS)
def test_matches_sklearn_float32_real(d, snapshot, backend):
    """float32 input: sklearn computes in float32, we accumulate in float64 (issue tolerances)."""
    x = real_losses(d, snapshot).astype(np.float32)
    # A split at the median loss (not k-means): a Dirichlet-random start ends near p = 0.5 for all
    # points, where the partition is decided by float32 rounding alone.
    low = x[:, 0] < np.median(x[:, 0])
    resp0 = np.stack([low, ~low], 1).astype(np.float32)
    gm, proba = sklearn_fit(x, resp0, **DIVIDEMIX)
    res = gmm_fit(
        torch.from_numpy(x)[None], init=torch.from_numpy(resp0)[None], backend=backend, **DIVIDEMIX
    )
    assert_matches_sklearn(res, gm, proba, rtol=1e-4, patol=1e-3)
    assert ((res.resp[0, :, 0].numpy() > 0.5) == (proba[:, 0] > 0.5)).mean() >= 0.999


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("backend", SKLEARN_BACKENDS)
def test_kmeans_init_matches_sklearn_end_to_end(d, seed, backend):
    """Our replay of KMeans(n_init=1, random_state=seed) gives sklearn's labels, so the whole fit agrees."""
    x = real_losses(d)
    gm, proba = sklearn_fit(x, seed=seed, **DIVIDEMIX)
    res = gmm_fit(torch.from_numpy(x)[None], seed=seed, backend=backend, **DIVIDEMIX)
    assert_matches_sklearn(res, gm, proba, rtol=1e-5, patol=1e-4)


def test_kmeans_init_three_components_matches_sklearn():
    """K = 3 uses 3 local k-means++ trials; the reference takes any K and D."""
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(m, 0.1, (700, 3)) for m in (0.0, 1.0, 2.5)])
    rng.shuffle(x)
    gm, proba = sklearn_fit(x, seed=5, n_components=3, **DIVIDEMIX)
    res = gmm_fit(
        torch.from_numpy(x)[None], n_components=3, seed=5, backend="reference", **DIVIDEMIX
    )
    assert_matches_sklearn(res, gm, proba, rtol=1e-5, patol=1e-4)


@pytest.mark.parametrize("backend", SKLEARN_BACKENDS)
@pytest.mark.parametrize("snapshot", SNAPSHOTS)
def test_clean_prob_matches_dividemix_and_plremix(backend, snapshot):
    """gmm_clean_prob vs the original code: sklearn on min-max losses, DivideMix argmin / PLReMix min norm."""
    raw = np.load(FIXTURE)[snapshot]
    for dims in (1, 2):
        x = raw[:, :dims]
        norm = (x - x.min(0)) / (x.max(0) - x.min(0))
        gm, proba = sklearn_fit(norm, seed=3, **DIVIDEMIX)
        clean = gm.means_.argmin() if dims == 1 else (gm.means_**2).sum(1).argmin()
        want = proba[:, clean]
        losses = torch.from_numpy(x[:, 0] if dims == 1 else x)
        got = gmm_clean_prob(losses, dims=dims, seed=3, backend=backend).numpy()
        assert got.shape == (len(x),) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-3
        assert ((got > 0.5) == (want > 0.5)).mean() >= 0.999


def test_clean_prob_batched_ragged_equals_single():
    raw = torch.from_numpy(np.load(FIXTURE)["losses_ep2"])
    a, b = raw[:3000], raw[3000:5000]
    batched = torch.zeros(2, 3000, 2)
    batched[0], batched[1, :2000] = a, b
    lengths = torch.tensor([3000, 2000])
    p = gmm_clean_prob(batched, dims=2, lengths=lengths, backend="reference")
    torch.testing.assert_close(p[0], gmm_clean_prob(a, dims=2, backend="reference"))
    torch.testing.assert_close(p[1, :2000], gmm_clean_prob(b, dims=2, backend="reference"))
    assert bool((p[1, 2000:] == 0).all())


@pytest.mark.parametrize(
    "snapshot, clean_key",
    [("losses_ep5", "clean"), ("r20_ep5", "clean_r20"), ("r80_ep5", "clean_r80")],
)
def test_clean_prob_separates_real_clean_samples(snapshot, clean_key):
    data = np.load(FIXTURE)
    prob = gmm_clean_prob(
        torch.from_numpy(data[snapshot][:, 0]), dims=1, backend="reference"
    ).numpy()
    clean = data[clean_key]
    assert prob[clean].mean() > prob[~clean].mean() + 0.2


def test_batched_ragged_equals_separate_fits():
    xs = [synth_losses(n, 2, s) for n, s in ((600, 0), (450, 1), (2, 2))]
    n = max(len(a) for a in xs)
    x = torch.zeros(3, n, 2, dtype=torch.float64)
    for g, a in enumerate(xs):
        x[g, : len(a)] = torch.from_numpy(a)
        x[g, len(a) :] = 1e6  # padding must be ignored
    lengths = torch.tensor([len(a) for a in xs])
    res = gmm_fit(x, lengths, backend="reference", **DIVIDEMIX)
    for g, a in enumerate(xs):
        one = gmm_fit(torch.from_numpy(a)[None], backend="reference", **DIVIDEMIX)
        torch.testing.assert_close(res.means[g], one.means[0])
        torch.testing.assert_close(res.resp[g, : len(a)], one.resp[0])
        assert bool((res.resp[g, len(a) :] == 0).all())


def test_given_params_warm_start_matches_sklearn():
    x = synth_losses(3000, 2, 4)
    w = np.array([0.4, 0.6])
    mu = np.array([[0.1, 0.1], [0.7, 0.6]])
    cov = np.stack([np.eye(2) * 0.02, np.array([[0.05, 0.01], [0.01, 0.04]])])
    gm = GaussianMixture(
        2, weights_init=w, means_init=mu, precisions_init=np.linalg.inv(cov), **DIVIDEMIX
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x)
    init = GMMParams(*(torch.from_numpy(a)[None] for a in (w, mu, cov)))
    res = gmm_fit(torch.from_numpy(x)[None], init=init, backend="reference", **DIVIDEMIX)
    assert_matches_sklearn(res, gm, gm.predict_proba(x), rtol=1e-5, patol=1e-4)
    res2 = gmm_fit(torch.from_numpy(x)[None], init=init._asdict(), backend="reference", **DIVIDEMIX)
    torch.testing.assert_close(res.resp, res2.resp)


def test_quantile_init_is_deterministic_and_sensible():
    x = torch.from_numpy(synth_losses(5000, 1, 5))[None]
    a = gmm_fit(x, init="quantile", backend="reference", **DIVIDEMIX)
    b = gmm_fit(x, init="quantile", backend="reference", **DIVIDEMIX)
    torch.testing.assert_close(a.resp, b.resp, rtol=0, atol=0)
    k = gmm_fit(x, init="kmeans", backend="reference", **DIVIDEMIX)
    assert torch.allclose(a.means.sort(1).values, k.means.sort(1).values, atol=1e-3)


def test_degenerate_constant_vector_no_nan():
    """A constant vector: sklearn's path gives one empty component (N_k = 10 eps); no NaN anywhere."""
    x = torch.full((1, 50, 1), 0.3, dtype=torch.float64)
    res = gmm_fit(x, backend="reference", **DIVIDEMIX)
    assert all(bool(torch.isfinite(t).all()) for t in res[:5])
    torch.testing.assert_close(res.resp.sum(-1), torch.ones(1, 50, dtype=torch.float64))
    with pytest.raises(ValueError, match="constant"):
        gmm_clean_prob(x[0, :, 0], dims=1, backend="reference")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("batched", [False, True])
def test_clean_prob_reads_constant_columns_only_when_the_fit_fails(backend, batched, monkeypatch):
    """A constant column normalises to NaN; the fit reports it and only then is the constant test read
    back, naming the column. A good fit through a kernel reads back only its status."""
    if backend == "cpu" and not _ext.has_kernel("gmm_em", "CPU"):
        pytest.skip("no CPU kernel")
    losses = torch.from_numpy(synth_losses(400, 2, 11))
    losses[:, 1] = 0.7
    x, lengths = (
        (torch.stack([losses.flip(0), losses]), torch.tensor([400, 300]))
        if batched
        else (losses, None)
    )
    with pytest.raises(ValueError, match="problem 0, column 1 is constant"):
        gmm_clean_prob(x, dims=2, lengths=lengths, backend=backend)
    if backend == "reference":
        return  # it reads values back all along
    reads = []  # the compiled path's Python layer is the same for the CPU and CUDA kernels
    for name in ("any", "all"):  # every value check reduces with one of them
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor,
            name,
            lambda t, *a, _n=name, _r=real, **k: (
                reads.append((_n, tuple(t.shape))) or _r(t, *a, **k)
            ),
        )
    good = torch.from_numpy(synth_losses(400, 2, 12))
    prob = gmm_clean_prob(good, dims=2, backend=backend)
    assert reads == [("any", (1,))]  # the fit's status, once
    monkeypatch.undo()
    assert prob.shape == (400,) and bool(torch.isfinite(prob).all())


def test_degenerate_collapsed_component():
    """All initial mass on one component: sklearn keeps the empty one at mean 0, covariance reg."""
    x = synth_losses(500, 1, 6)
    resp0 = np.zeros((500, 2))
    resp0[:, 0] = 1
    gm, proba = sklearn_fit(x, resp0, **DIVIDEMIX)
    res = gmm_fit(
        torch.from_numpy(x)[None],
        init=torch.from_numpy(resp0)[None],
        backend="reference",
        **DIVIDEMIX,
    )
    assert_matches_sklearn(res, gm, proba, rtol=1e-5, patol=1e-4)
    with pytest.raises(ValueError, match="positive definite"):
        gmm_fit(
            torch.from_numpy(x)[None],
            init=torch.from_numpy(resp0)[None],
            max_iter=5,
            reg_covar=0.0,
            backend="reference",
        )


def _x(g=1, n=10, d=1):
    return torch.rand(g, n, d)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gmm_fit(torch.rand(10)), "Tensor\\[G, N, D\\]"),
        (lambda: gmm_fit(torch.rand(10, 1)), "Tensor\\[G, N, D\\]"),
        (lambda: gmm_fit(_x().int()), "float32 or float64"),
        (lambda: gmm_fit(torch.tensor([[[0.0], [float("nan")], [1.0]]])), "NaN"),
        (lambda: gmm_fit(torch.tensor([[[0.0], [float("inf")], [1.0]]])), "NaN"),
        (lambda: gmm_fit(_x(2), torch.tensor([5])), "lengths"),
        (lambda: gmm_fit(_x(2), torch.tensor([5, 11])), "lengths"),
        (lambda: gmm_fit(_x(2), torch.tensor([0, 5])), "lengths"),
        (lambda: gmm_fit(_x(1, 1)), "n_components|lengths"),
        (lambda: gmm_fit(_x(), n_components=0), "n_components"),
        (lambda: gmm_fit(_x(), n_components=11), "n_components"),
        (lambda: gmm_fit(_x(), max_iter=0), "max_iter"),
        (lambda: gmm_fit(_x(), reg_covar=-1.0), "reg_covar"),
        (lambda: gmm_fit(_x(), init="random"), "init"),
        (lambda: gmm_fit(_x(), init=torch.rand(1, 10, 3)), "responsibilities"),
        (
            lambda: gmm_fit(
                _x(), init=GMMParams(torch.ones(1, 2), torch.zeros(1, 2, 2), torch.ones(1, 2, 1, 1))
            ),
            "means",
        ),
        (lambda: gmm_clean_prob(torch.rand(10, 2), dims=1), "dims"),
        (lambda: gmm_clean_prob(torch.rand(10, 2), dims=2, clean="max"), "clean"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_forced_unavailable_backend_raises_with_reasons():
    with pytest.raises(ValueError, match="cannot run"):
        gmm_fit(_x(), backend="cuda")
    with pytest.raises(ValueError, match="D in"):
        gmm_fit(_x(d=3), backend="cpu")


def _backend_cases():
    x1 = torch.from_numpy(synth_losses(3000, 1, 8))
    x2 = torch.from_numpy(real_losses(2)[:3000])
    return [(x1, "kmeans"), (x2, "kmeans"), (x2, "quantile"), (x1, "resp"), (x2, "given")]


def _compare_backends(backend: str, device: str):
    for x, init in _backend_cases():
        for dtype in (torch.float64, torch.float32):
            xx = torch.stack([x, x.flip(0)]).to(dtype)
            lengths = torch.tensor([len(x), len(x) - 777])
            if init == "resp":
                init_arg = torch.from_numpy(random_resp(len(x), 9)).expand(2, -1, -1).to(dtype)
            elif init == "given":
                init_arg = GMMParams(
                    *(
                        t[None].expand(2, *t.shape).to(dtype)
                        for t in (
                            torch.tensor([0.5, 0.5]),
                            torch.tensor([[0.1, 0.2], [0.6, 0.7]]),
                            torch.eye(2).repeat(2, 1, 1) * 0.05,
                        )
                    )
                )
            else:
                init_arg = init
            want = gmm_fit_reference(xx, lengths, init=init_arg, **DIVIDEMIX)
            dev = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
            init_dev = GMMParams(*map(dev, init_arg)) if init == "given" else dev(init_arg)
            got = gmm_fit(
                xx.to(device), lengths.to(device), init=init_dev, backend=backend, **DIVIDEMIX
            )
            tol = dict(atol=gmm_mod.ATOL[dtype], rtol=gmm_mod.RTOL[dtype])
            for a, b in zip(got, want):
                torch.testing.assert_close(a.cpu(), b, **tol)


@pytest.mark.skipif(not HAS_CPU, reason="lnl._C has no CPU kernel for gmm_em")
def test_cpu_kernel_matches_reference():
    _compare_backends("cpu", "cpu")


@pytest.mark.skipif(not HAS_CPU, reason="lnl._C has no CPU kernel for gmm_em")
@pytest.mark.parametrize("k, d", [(2, 1), (3, 2), (4, 1)])
def test_cpu_kmeans_and_em_match_reference_any_k(k, d):
    from lnl.ops import gmm_reference as ref

    rng = np.random.default_rng(k)
    x = torch.from_numpy(np.concatenate([rng.normal(m, 0.2, (400, d)) for m in range(k)]))[
        torch.randperm(400 * k)
    ]
    xx = torch.stack([x, x.flip(0)])
    lengths = torch.tensor([400 * k, 400 * k - 123])
    u = torch.as_tensor(ref.kmeans_uniforms(3, k)).expand(2, -1).contiguous()
    got = torch.ops.lnl.gmm_kmeans(xx, lengths, u, k)
    want = ref.kmeans_labels(xx, lengths, k, 3)
    assert torch.equal(got, want)
    a = gmm_fit(xx, lengths, n_components=k, seed=3, backend="cpu")
    b = gmm_fit_reference(xx, lengths, n_components=k, seed=3)
    for s, t in zip(a, b):
        torch.testing.assert_close(s, t, atol=1e-9, rtol=1e-9)


@pytest.mark.skipif(not HAS_CPU, reason="lnl._C has no CPU kernel for gmm_em")
@pytest.mark.parametrize("d", [1, 2])
def test_cpu_k2_simd_path_tails_and_underflow_match_reference(d):
    # K = 2 runs through 8-lane SIMD groups plus a scalar tail per chunk: lengths around multiples of 8
    # exercise both; clusters 40 standard deviations apart drive exp(-|delta|) below its -708 clamp.
    rng = np.random.default_rng(d)
    for n in (5, 8, 9, 23, 64, 16384 + 13):
        x = np.concatenate(
            [rng.normal(0.0, 1.0, (n - n // 2, d)), rng.normal(40.0, 1.0, (n // 2, d))]
        )
        xx = torch.from_numpy(rng.permutation(x))[None]
        for dtype in (torch.float64, torch.float32):
            got = gmm_fit(xx.to(dtype), backend="cpu", **DIVIDEMIX)
            want = gmm_fit_reference(xx.to(dtype), **DIVIDEMIX)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, atol=gmm_mod.ATOL[dtype], rtol=gmm_mod.RTOL[dtype])


@pytest.mark.skipif(not HAS_CPU, reason="lnl._C has no CPU kernel for gmm_em")
def test_cpu_kernel_degenerate_and_opcheck():
    x = torch.full((1, 50, 1), 0.3, dtype=torch.float64)
    res = gmm_fit(x, backend="cpu", **DIVIDEMIX)
    assert all(bool(torch.isfinite(t).all()) for t in res[:5])
    resp0 = torch.zeros(1, 200, 2, dtype=torch.float64)
    resp0[..., 0] = 1
    with pytest.raises(ValueError, match="positive definite"):
        gmm_fit(
            torch.rand(1, 200, 1, dtype=torch.float64), init=resp0, reg_covar=0.0, backend="cpu"
        )
    xs = torch.rand(2, 40, 2)
    lengths = torch.tensor([40, 25])
    u = torch.rand(2, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.lnl.gmm_kmeans.default, (xs, lengths, u, 2))
    labels = torch.ops.lnl.gmm_kmeans(xs, lengths, u, 2)
    torch.library.opcheck(
        torch.ops.lnl.gmm_em.default,
        (xs, lengths, labels, None, None, None, None, 2, 10, 1e-2, 5e-4),
    )


def _compiled_backends():
    return [
        pytest.param("cpu", marks=pytest.mark.skipif(not HAS_CPU, reason="no CPU kernel")),
        pytest.param(
            "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")]
        ),
    ]


@pytest.mark.parametrize("backend", _compiled_backends())
def test_compiled_empty_component_keeps_sklearns_mean(backend):
    """An (almost) empty component: N_k = 10 eps, so sklearn's mean is ~0, not the data. The kernels sum
    x - shift and must add the shift back with weight sum(r), not N_k (they once put it at x[0])."""
    dev = "cuda" if backend == "cuda" else "cpu"
    x = torch.rand(1, 200, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 5
    resp0 = torch.zeros(1, 200, 2, dtype=torch.float64)
    resp0[..., 0] = 1
    for args in (
        (x, dict(init=resp0, reg_covar=1e-3)),
        (torch.full((1, 50, 1), 0.3, dtype=torch.float64), DIVIDEMIX),
    ):
        xx, kw = args
        kw = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        got = gmm_fit(xx.to(dev), backend=backend, **kw)
        want = gmm_fit_reference(
            xx, **{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a.cpu(), b, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("backend", _compiled_backends())
def test_compiled_given_covariances_read_as_symmetric_matrices(backend):
    dev = "cuda" if backend == "cuda" else "cpu"
    x = torch.from_numpy(synth_losses(500, 2, 3))[None]
    cov = torch.tensor(
        [[[0.05, 0.02], [0.02, 0.05]], [[0.04, -0.01], [-0.01, 0.06]]], dtype=torch.float64
    )[None]
    init = GMMParams(
        torch.tensor([[0.5, 0.5]], dtype=torch.float64),
        torch.tensor([[[0.1, 0.1], [0.7, 0.6]]], dtype=torch.float64),
        cov,
    )
    got = gmm_fit(
        x.to(dev), init=GMMParams(*(t.to(dev) for t in init)), max_iter=1, backend=backend
    )
    want = gmm_fit_reference(x, init=init, max_iter=1)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, atol=1e-9, rtol=1e-9)
    skew = cov.clone()
    skew[0, 0, 0, 1] = 0.0
    with pytest.raises(ValueError, match="symmetric"):
        gmm_fit(
            x,
            init=GMMParams(init.weights, init.means, skew),
            backend=backend if backend == "cpu" else "reference",
        )


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and the CUDA kernel")
@pytest.mark.parametrize("k, d", [(2, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("g", [1, 3])
def test_cuda_large_ragged_and_any_k_match_reference(k, d, g):
    """N > 65,536: one problem takes a cooperative grid; three take a cluster each on sm_90 (a block
    each before); lengths leave padding and a tiny problem."""
    from lnl.ops import gmm_reference as ref

    rng = np.random.default_rng(10 + k)
    n = 70_000
    x = torch.from_numpy(
        np.concatenate([rng.normal(m, 0.3, (n // k + 1, d)) for m in range(k)])[:n]
    )
    xx = torch.stack([x[torch.randperm(n)], x.flip(0), x])[:g]
    lengths = torch.tensor([n, 8193, 2 * k])[:g]
    u = torch.as_tensor(ref.kmeans_uniforms(4, k)).expand(g, -1).contiguous()
    assert torch.equal(
        torch.ops.lnl.gmm_kmeans(xx.cuda(), lengths.cuda(), u.cuda(), k).cpu(),
        ref.kmeans_labels(xx, lengths, k, 4),
    )
    got = gmm_fit(xx.cuda(), lengths.cuda(), n_components=k, seed=4, backend="cuda", **DIVIDEMIX)
    want = gmm_fit_reference(xx, lengths, n_components=k, seed=4, **DIVIDEMIX)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, atol=1e-7, rtol=1e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and the CUDA kernel")
def test_cuda_kernel_matches_reference():
    _compare_backends("cuda", "cuda")


@pytest.mark.parametrize("backend", _compiled_backends())
@pytest.mark.parametrize("d", [1, 2])
def test_compiled_few_large_problems_match_reference(backend, d):
    """Two ragged problems of 50k points: on sm_90 k-means and EM each run a cluster of 8 blocks per
    problem (DivideMix's and PLReMix's shape); a NaN is reported naming its problem."""
    from lnl.ops import gmm_reference as ref

    dev = "cuda" if backend == "cuda" else "cpu"
    rng = np.random.default_rng(20 + d)
    n = 50_000
    x = torch.from_numpy(
        np.concatenate([rng.gamma(2, 0.1, (30_000, d)), rng.gamma(6, 0.3, (20_000, d))])
    )
    xx = torch.stack([x[torch.randperm(n, generator=torch.Generator().manual_seed(d))], x.flip(0)])
    lengths = torch.tensor([n, 41_000])
    u = torch.as_tensor(ref.kmeans_uniforms(4, 2)).expand(2, -1).contiguous()
    assert torch.equal(
        torch.ops.lnl.gmm_kmeans(xx.to(dev), lengths.to(dev), u.to(dev), 2).cpu(),
        ref.kmeans_labels(xx, lengths, 2, 4),
    )
    got = gmm_fit(xx.to(dev), lengths.to(dev), seed=4, backend=backend, **DIVIDEMIX)
    want = gmm_fit_reference(xx, lengths, seed=4, **DIVIDEMIX)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, atol=1e-7, rtol=1e-7)
    xx[1, 40_000, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf \\(problem 1\\)"):
        gmm_fit(xx.to(dev), lengths.to(dev), seed=4, backend=backend, **DIVIDEMIX)
