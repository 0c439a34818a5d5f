"""``python -m lnl.selftest [--quick] [--json PATH]``: on a new GPU, run this first.

On the current device (CUDA when present, else the CPU) it checks every compiled backend of every op
(``lnl.ops.OPS``) in every dtype that backend takes against the op's pure-PyTorch reference, over a
grid of shapes: odd sizes, exact ties (integer-valued data), k near N, one sample, no negative pair,
and NaN/inf rows (every op raises ``ValueError`` for them); on CUDA each op also runs on two streams
at once. Then it times each backend against the library baselines in the same run (kNN: chunked
``torch.mm`` + ``topk`` and faiss when installed; GMM: scikit-learn and the PyTorch reference; PLR:
the dense PyTorch loss, forward + backward). It prints both tables, writes the JSON below and exits
with status 1 when any check failed. ``--quick`` (small grid, small timings) takes under a minute
on two CPU cores.

selftest.json fields:
    schema: 1.
    created: UTC time, ISO 8601.
    quick: whether ``--quick`` ran.
    device: {"type": "cuda"|"cpu", "name", "capability": [major, minor] or null,
             "multiprocessors": SM count or null}.
    versions: {"lnl", "python", "torch", "torch_cuda", "numpy", "sklearn", "faiss" (null if absent)}.
    build: ``lnl._C``'s build info (``_build_info.json``: arch list, flags, git SHA), {} if not built;
        "extension": null when lnl._C loaded, else its import error.
    checks: one per (op, backend, dtype, case): {"op", "backend", "dtype", "case",
        "status": "pass"|"fail"|"skipped", "detail": what differed, or why skipped}.
    timings: one per (op, size, name): {"op", "size", "name" (a backend, or a baseline such as
        "torch mm+topk", "faiss", "sklearn", "torch reference", "dense torch"), "baseline": bool,
        "ms": median milliseconds (null when it could not run), "vs_best_baseline": ms divided by the
        fastest baseline's ms of that size (< 1: faster), "note"}.
    failures: the number of failed checks (the exit status is 1 when > 0).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

import lnl
from lnl import _ext
from lnl.ops import OPS, _dispatch, _tune, _verify
from lnl.ops import gmm as gmm_op
from lnl.ops import knn as knn_op
from lnl.ops import plr as plr_op

FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Timing sizes: (quick, full on the CPU, full on CUDA). kNN: (N, D, k); GMM: N; PLR: B.
SIZES = {
    "knn_labels": ((2000, 64, 10), (20000, 128, 10), (50000, 128, 10)),
    "gmm_em": (20000, 50000, 50000),
    "plr_loss": (256, 1024, 4096),
}
HALF = (torch.float16, torch.bfloat16)


class Case(NamedTuple):
    name: str
    make: Callable[[torch.device, torch.dtype], dict]  # inputs on the device
    raises: bool = False  # the op must raise ValueError (NaN/inf rows)
    exact: bool = False  # integer-valued data: indices and ties must match exactly


# ---------------------------------------------------------------- inputs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, seed, device, dtype, integers=False) -> torch.Tensor:
    g = _gen(seed)
    t = (
        torch.randint(-2, 3, shape, generator=g).float()
        if integers
        else torch.randn(shape, generator=g)
    )
    return t.to(device, dtype)


def _knn_case(name, q, n, d, k, exclude=False, integers=False, bad=None) -> Case:
    def make(device, dtype):
        keys = _randn((n, d), 1, device, dtype, integers)
        queries = keys if exclude else _randn((q, d), 2, device, dtype, integers)
        if bad is not None:
            queries = queries.clone()
            queries[q // 2, 0] = bad
        return {
            "queries": queries,
            "keys": keys,
            "labels": torch.arange(n, device=device) % 7,
            "k": k,
            "exclude": exclude,
        }

    return Case(name, make, raises=bad is not None, exact=integers)


def _gmm_case(name, g, n, d, k, init="kmeans", ragged=False, step=None, bad=None, reg=1e-6) -> Case:
    def make(device, dtype):
        gen = _gen(n + d + k)
        centres = torch.rand(g, k, d, generator=gen) * 10
        x = centres.gather(
            1, torch.randint(0, k, (g, n, 1), generator=gen).expand(-1, -1, d)
        ) + 0.3 * torch.randn(g, n, d, generator=gen)
        if step is not None:  # values on a grid: many exact ties
            x = (x / step).round() * step
        if bad is not None:
            x[0, n // 3, 0] = bad
        lengths = torch.tensor([n - 7 * i for i in range(g)], device=device) if ragged else None
        return {
            "x": x.to(device, dtype),
            "lengths": lengths,
            "k": k,
            "init": init,
            "reg": reg,
        }

    return Case(name, make, raises=bad is not None)


def _plr_case(name, b, v, d, c, kappa, flat=True, same=False, bad=None) -> Case:
    def make(device, dtype):
        gen = _gen(b * v + d)
        feats = F.normalize(torch.randn(v * b, d, generator=gen), dim=1)
        if bad is not None:
            feats[1, 0] = bad
        cand = torch.randn(b, c, generator=gen).topk(max(kappa, 1), dim=1).indices
        labels = torch.randint(0, c, (b,), generator=gen)
        if same:  # every set holds class 0: no negative pair anywhere
            cand, labels = torch.zeros_like(cand), torch.zeros_like(labels)
        return {
            "features": feats.to(device, dtype),
            "cand": cand.to(device),
            "labels": labels.to(device),
            "kappa": kappa,
            "classes": c,
            "flat": flat,
        }

    return Case(name, make, raises=bad is not None)


def knn_cases(quick: bool) -> list[Case]:
    cases = [
        _knn_case("odd 7x13 d5 k3", 7, 13, 5, 3),
        _knn_case("k=N 33x65 d17 k65", 33, 65, 17, 65),
        _knn_case("self k=N-1 31 d3", 31, 31, 3, 30, exclude=True),
        _knn_case("ties ints 40x90 d4 k10", 40, 90, 4, 10, integers=True),
        _knn_case("ties d1 9x20 k19", 9, 20, 1, 19, integers=True),
        _knn_case("nan row", 8, 16, 4, 2, bad=float("nan")),
        _knn_case("inf row", 8, 16, 4, 2, bad=float("inf")),
    ]
    if not quick:
        cases += [
            _knn_case("tiles 130x1031 d129 k17", 130, 1031, 129, 17),
            _knn_case("k256 64x2000 d64", 64, 2000, 64, 256),
            _knn_case("ties self 515 d31 k50", 515, 515, 31, 50, exclude=True, integers=True),
            # few query blocks for a GPU's SMs: the CUDA kernel splits the keys into slices and
            # merges their lists (ties across slices)
            _knn_case("few queries ties 40x9000 d32 k20", 40, 9000, 32, 20, integers=True),
            _knn_case("ties self 4500 d16 k10", 4500, 4500, 16, 10, exclude=True, integers=True),
            _knn_case(
                "wide d768 100x3000 k10", 100, 3000, 768, 10
            ),  # where GEMM + select should win
        ]
    return cases


def gmm_cases(quick: bool) -> list[Case]:
    cases = [
        _gmm_case("ragged 3x203 d1 k2", 3, 203, 1, 2, ragged=True),
        _gmm_case("d2 k3 quantile 2x257", 2, 257, 2, 3, init="quantile"),
        _gmm_case("k=N 1x4 d1 k4", 1, 4, 1, 4, init="quantile", reg=1e-2),
        _gmm_case("ties grid 0.5 2x301 d2 k2", 2, 301, 2, 2, step=0.5),
        _gmm_case("nan row", 2, 50, 1, 2, bad=float("nan")),
        _gmm_case("inf row", 2, 50, 2, 2, bad=float("inf")),
    ]
    if not quick:
        cases += [
            _gmm_case("large 2x20000 d2 k2", 2, 20000, 2, 2),
            _gmm_case("one problem 1x70000 d1 k2", 1, 70000, 1, 2),  # CUDA: a cooperative grid
            _gmm_case("k4 4x3001 d2", 4, 3001, 2, 4, ragged=True),
        ]
    return cases


def plr_cases(quick: bool) -> list[Case]:
    cases = [
        _plr_case("odd B7 V2 d5 C4 k1", 7, 2, 5, 4, 1),
        _plr_case("supcon B13 V3 d17 C10 k2", 13, 3, 17, 10, 2, flat=False),
        _plr_case("kappa0 B9 d8 C5", 9, 2, 8, 5, 0),
        _plr_case("no negatives B5", 5, 2, 8, 3, 1, same=True),
        _plr_case("one sample", 1, 2, 4, 3, 1),
        _plr_case("nan row", 6, 2, 4, 3, 1, bad=float("nan")),
        _plr_case("inf row", 6, 2, 4, 3, 1, bad=float("inf")),
    ]
    if not quick:
        cases += [
            _plr_case("tiles B300 d128 C100 k3", 300, 2, 128, 100, 3),
            _plr_case("supcon B129 V4 d64 C37", 129, 4, 64, 37, 2, flat=False),
            # the CUDA backward's partial D slices (128 wide) and row blocks (64 rows)
            _plr_case("slices B37 d150 C6 k1", 37, 2, 150, 6, 1),
            _plr_case("supcon slices B23 V3 d300 C6 k0", 23, 3, 300, 6, 0, flat=False),
        ]
    return cases


# ---------------------------------------------------------------- running and comparing


def run_knn(inp: dict, backend: str) -> dict:
    out = knn_op.knn_labels(
        inp["queries"],
        inp["keys"],
        inp["labels"],
        inp["k"],
        7,
        metric=inp["metric"],
        exclude_self=inp["exclude"],
        backend=backend,
    )
    return out._asdict()


def run_gmm(inp: dict, backend: str) -> dict:
    out = gmm_op.gmm_fit(
        inp["x"],
        inp["lengths"],
        n_components=inp["k"],
        init=inp["init"],
        reg_covar=inp["reg"],
        max_iter=20,
        backend=backend,
    )
    return {
        "resp": out.resp,
        "means": out.means,
        "weights": out.weights,
        "n_iter": out.n_iter,
    }


def run_plr(inp: dict, backend: str) -> dict:
    feats = inp["features"].detach().clone().requires_grad_()
    stats = plr_op.plr_loss(
        feats,
        inp["cand"],
        inp["labels"],
        kappa=inp["kappa"],
        num_classes=inp["classes"],
        flat=inp["flat"],
        return_stats=True,
        backend=backend,
    )
    stats.loss.backward()
    return {
        "loss": stats.loss.detach(),
        "value": stats.value,
        "lse": stats.lse,
        "n_neg": stats.n_neg,
        "grad": feats.grad,
    }


def run_mask(inp: dict, backend: str) -> dict:
    return {
        "mask": plr_op.plr_mask(
            inp["cand"],
            inp["labels"],
            inp["kappa"],
            num_classes=inp["classes"],
            backend=backend,
        )
    }


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The first-use check's relative error, absolute for values below 1."""
    return _verify.rel_error(got, want, floor=1.0)


def tolerance(dtype: torch.dtype) -> float:
    return {
        torch.float64: 1e-9,
        torch.float32: 1e-4,
        torch.float16: 2e-2,
        torch.bfloat16: 4e-2,
    }[dtype]


def compare_knn(got: dict, want: dict, inp: dict, case: Case, dtype) -> str | None:
    """Scores as the reference's; each returned neighbour's score recomputed; exact indices on ties."""
    problems = []
    if case.exact and not torch.equal(got["indices"].cpu(), want["indices"].cpu()):
        problems.append(
            f"{int((got['indices'] != want['indices']).sum())} indices differ on exact data"
        )
    err = rel_error(got["scores"], want["scores"])
    if err > tolerance(dtype):
        problems.append(f"score error {err:.3g}")
    q, keys = inp["queries"].double(), inp["keys"].double()
    mine = want_scores(q, keys, got["indices"], inp["metric"])
    if rel_error(got["scores"], mine) > tolerance(dtype):
        problems.append(
            f"returned scores are not their neighbours' (error {rel_error(got['scores'], mine):.3g})"
        )
    if inp["exclude"] and bool(
        (got["indices"] == torch.arange(len(q), device=q.device)[:, None]).any()
    ):
        problems.append("a query found itself with exclude_self")
    if not torch.equal(got["votes"], knn_op.votes_from_indices(got["indices"], inp["labels"], 7)):
        problems.append("votes do not count the neighbours' labels")
    return "; ".join(problems) or None


def want_scores(q, keys, indices, metric) -> torch.Tensor:
    """float64 score of each (query, returned key) pair."""
    if metric == "cosine":
        q, keys = F.normalize(q, dim=1), F.normalize(keys, dim=1)
    picked = keys[indices]  # [Q, k, D]
    if metric == "l2":
        return (picked - q[:, None]).pow(2).sum(-1).sqrt()
    return (picked * q[:, None]).sum(-1)


def compare_fields(got: dict, want: dict, exact: tuple[str, ...], dtype) -> str | None:
    problems = []
    for name, value in want.items():
        if name in exact:
            if not torch.equal(got[name].cpu(), value.cpu()):
                problems.append(
                    f"{name}: {int((got[name].cpu() != value.cpu()).sum())} entries differ"
                )
        elif (err := rel_error(got[name], value)) > tolerance(dtype):
            problems.append(f"{name}: relative error {err:.3g}")
    return "; ".join(problems) or None


class Op(NamedTuple):
    kernel: str  # the lnl::<kernel> whose backends are checked
    dtypes: tuple[torch.dtype, ...]
    cases: Callable[[bool], list[Case]]
    run: Callable[[dict, str], dict]
    compare: Callable[[dict, dict, dict, Case, torch.dtype], str | None]
    variants: tuple[dict, ...] = ({},)  # extra keyword inputs crossed with every case


CHECKED = {
    "knn_labels": Op(
        "knn_labels",
        FLOATS,
        knn_cases,
        run_knn,
        compare_knn,
        ({"metric": "cosine"}, {"metric": "ip"}, {"metric": "l2"}),
    ),
    "gmm_em": Op(
        "gmm_em",
        (torch.float32, torch.float64),
        gmm_cases,
        run_gmm,
        lambda g, w, i, c, dt: compare_fields(g, w, ("n_iter",), dt),
    ),
    "plr_loss": Op(
        "plr_loss",
        FLOATS,
        plr_cases,
        run_plr,
        lambda g, w, i, c, dt: compare_fields(g, w, ("n_neg",), dt),
    ),
    "plr_mask": Op(
        "plr_mask",
        (torch.int64,),
        plr_cases,
        run_mask,
        lambda g, w, i, c, dt: compare_fields(g, w, ("mask",), dt),
    ),
}


def supported_dtypes(op: str, backend: str, device: torch.device) -> list[torch.dtype]:
    """The dtypes ``backend`` of ``op`` takes (its dispatch reasons for a probe input are empty)."""
    spec = CHECKED[op]
    found = []
    for dtype in spec.dtypes:
        probe = torch.zeros(1, 4, 1 if op == "gmm_em" else 4, device=device, dtype=dtype)
        if op == "knn_labels":
            reasons = knn_op.not_supported_reasons(
                backend, probe[0], probe[0], probe[0, :, 0].long(), 1, "ip"
            )
        elif op == "gmm_em":
            reasons = gmm_op.not_supported_reasons(backend, probe, 2)
        else:
            reasons = plr_op.not_supported_reasons(backend, probe[0], 4, op)
        if not reasons:
            found.append(dtype)
    return found


def upcast(inp: dict) -> dict:
    """The reference's inputs: 16-bit floats in float32 (its answer is the oracle for the kernel's)."""
    return {
        k: v.float() if isinstance(v, torch.Tensor) and v.dtype in HALF else v
        for k, v in inp.items()
    }


def check_one(
    op: str, case: Case, backend: str, dtype, device, variant: dict, streams: int = 1
) -> str | None:
    """None when ``backend`` agrees with the reference on this case (or raises as it must), else why not."""
    spec = CHECKED[op]
    inp = {
        **case.make(device, dtype if dtype.is_floating_point else torch.float32),
        **variant,
    }
    if case.raises:
        try:
            spec.run(inp, backend)
        except ValueError:
            return None
        return "NaN/inf input did not raise ValueError"
    want = spec.run(upcast(inp), "reference")
    for got in on_streams(lambda: spec.run(inp, backend), streams):
        if problem := spec.compare(got, want, inp, case, dtype):
            return problem
    return None


def on_streams(fn: Callable[[], dict], streams: int) -> list[dict]:
    """``fn`` on the current stream, or launched on ``streams`` CUDA streams at once."""
    if streams == 1:
        return [fn()]
    side = [torch.cuda.Stream() for _ in range(streams)]
    outs = []
    for stream in side:
        stream.wait_stream(
            torch.cuda.current_stream()
        )  # the inputs were made on the current stream
        with torch.cuda.stream(stream):
            outs.append(fn())
    torch.cuda.synchronize()
    return outs


def compiled_backends(op: str, device: torch.device) -> tuple[list[str], list[str]]:
    """The compiled backends of ``op`` that run on ``device``, and why the others do not."""
    runs, why = [], []
    for backend in _dispatch.priority(op):  # kNN: cuda, cuda_gemm (its GEMM + select variant), cpu
        if backend == "reference":
            continue
        reasons = _dispatch.compiled_reasons(op, backend, device)
        (why if reasons else runs).extend(reasons if reasons else [backend])
    return runs, why


def correctness(device: torch.device, quick: bool) -> list[dict]:
    rows = []
    for op in OPS:
        runs, why = compiled_backends(op, device)
        if not runs:
            rows.append(
                {
                    "op": op,
                    "backend": "-",
                    "dtype": "-",
                    "case": "-",
                    "status": "skipped",
                    "detail": "; ".join(why),
                }
            )
        for backend in runs:
            rows += check_backend(op, backend, device, quick)
    return rows


def check_backend(op: str, backend: str, device: torch.device, quick: bool) -> list[dict]:
    spec, rows = CHECKED[op], []
    for dtype in supported_dtypes(op, backend, device):
        for number, case in enumerate(spec.cases(quick)):
            if case.raises and op == "plr_mask":
                continue  # the mask takes no features
            for variant in spec.variants:
                if case.exact and variant.get("metric") == "cosine":
                    continue  # normalised integers are not exact: their ties are rounding's
                streams = 2 if device.type == "cuda" and number == 0 else 1
                name = " ".join(
                    [case.name, *map(str, variant.values())]
                    + (["2 streams"] if streams > 1 else [])
                )
                try:
                    problem = check_one(op, case, backend, dtype, device, variant, streams)
                except Exception as exc:  # noqa: BLE001  (a crash is a failed check, and the run goes on)
                    problem = f"raised {type(exc).__name__}: {exc}"
                rows.append(
                    {
                        "op": op,
                        "backend": backend,
                        "dtype": str(dtype).removeprefix("torch."),
                        "case": name,
                        "status": "fail" if problem else "pass",
                        "detail": problem or "",
                    }
                )
    return rows


# ---------------------------------------------------------------- timings


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` of a source checkout (its baselines), or None when not there."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (folder / f"{name}.py").is_file():
        return None
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def timed_ms(fn: Callable[[], object], device: torch.device, reps: int) -> tuple[float | None, str]:
    try:
        return 1e3 * _tune.seconds(fn, device, reps), ""
    except Exception as exc:  # noqa: BLE001  (a baseline that cannot run here: faiss without GPU support ...)
        return None, f"{type(exc).__name__}: {exc}"[:200]


def size_of(op: str, device: torch.device, quick: bool):
    return SIZES[op][0 if quick else (2 if device.type == "cuda" else 1)]


def knn_entries(device, quick) -> tuple[str, list[tuple[str, bool, Callable]]]:
    n, d, k = size_of("knn_labels", device, quick)
    x = F.normalize(torch.randn(n, d, generator=_gen(0)), dim=1).to(device)
    labels = torch.arange(n, device=device) % 10
    entries = [
        (
            b,
            False,
            lambda b=b: knn_op.knn_labels(x, x, labels, k, 10, exclude_self=True, backend=b),
        )
        for b in compiled_backends("knn_labels", device)[0]
    ]
    if bench := benchmark_module("bench_knn"):
        entries.append(("torch mm+topk", True, lambda: bench.torch_mm_topk(x, x, labels, k, 1024)))
    entries.append(
        (
            "faiss",
            True,
            lambda: knn_op.knn_labels(x, x, labels, k, 10, exclude_self=True, backend="faiss"),
        )
    )
    return f"self-kNN N={n} D={d} k={k} cosine float32", entries


def gmm_entries(device, quick) -> tuple[str, list[tuple[str, bool, Callable]]]:
    n = size_of("gmm_em", device, quick)
    x = torch.rand(1, n, 2, generator=_gen(1)).to(device)
    kw = {"max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}
    entries = [
        (b, False, lambda b=b: gmm_op.gmm_fit(x, backend=b, **kw))
        for b in compiled_backends("gmm_em", device)[0]
    ]
    entries.append(("torch reference", True, lambda: gmm_op.gmm_fit(x, backend="reference", **kw)))
    if bench := benchmark_module("bench_gmm"):
        host = x[0].cpu().numpy()
        entries.append(("sklearn", True, lambda: bench.sklearn_proba(host)))
    return f"GMM N={n} D=2 K=2 max_iter=10 float32", entries


def plr_entries(device, quick) -> tuple[str, list[tuple[str, bool, Callable]]]:
    b = size_of("plr_loss", device, quick)
    inp = _plr_case("", b, 2, 128, 10, 2).make(device, torch.float32)
    entries = [
        (name, False, lambda name=name: run_plr(inp, name))
        for name in compiled_backends("plr_loss", device)[0]
    ]
    entries.append(("dense torch", True, lambda: run_plr(inp, "reference")))
    return f"PLR fwd+bwd B={b} V=2 D=128 C=10 float32", entries


def timings(device: torch.device, quick: bool) -> list[dict]:
    rows = []
    for op, entries_of in (
        ("knn_labels", knn_entries),
        ("gmm_em", gmm_entries),
        ("plr_loss", plr_entries),
    ):
        size, entries = entries_of(device, quick)
        measured = [
            (name, base, *timed_ms(fn, device, 2 if quick else 3)) for name, base, fn in entries
        ]
        best = min((ms for _, base, ms, _ in measured if base and ms), default=None)
        rows += [
            {
                "op": op,
                "size": size,
                "name": name,
                "baseline": base,
                "ms": ms,
                "note": note,
                "vs_best_baseline": ms / best if ms and best else None,
            }
            for name, base, ms, note in measured
        ]
    return rows


# ---------------------------------------------------------------- report


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {
            "type": "cpu",
            "name": _tune.device_name(device),
            "capability": None,
            "multiprocessors": None,
        }
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "capability": [props.major, props.minor],
        "multiprocessors": props.multi_processor_count,
    }


def versions() -> dict:
    import numpy
    import sklearn

    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = None
    return {
        "lnl": lnl.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "faiss": faiss_version,
    }


def print_tables(report: dict) -> None:
    checks = report["checks"]
    print(f"lnl self-test on {report['device']['name']} ({report['device']['type']})")
    groups: dict[tuple, list[dict]] = {}
    for row in checks:
        groups.setdefault((row["op"], row["backend"], row["dtype"]), []).append(row)
    print(f"{'op':<12} {'backend':<9} {'dtype':<9} {'checks':>7}  result")
    for (op, backend, dtype), rows in groups.items():
        failed = [r for r in rows if r["status"] == "fail"]
        status = (
            rows[0]["detail"] if rows[0]["status"] == "skipped" else ("FAIL" if failed else "ok")
        )
        print(f"{op:<12} {backend:<9} {dtype:<9} {len(rows):>7}  {status}")
        for r in failed:
            print(f"    FAIL {r['case']}: {r['detail']}")
    print(f"\n{'op':<12} {'name':<16} {'ms':>10} {'vs best baseline':>17}  size")
    for r in report["timings"]:
        ms = f"{r['ms']:.2f}" if r["ms"] else "-"
        ratio = f"{r['vs_best_baseline']:.3g}x" if r["vs_best_baseline"] else "-"
        tag = " (baseline)" if r["baseline"] else ""
        print(f"{r['op']:<12} {r['name']:<16} {ms:>10} {ratio:>17}  {r['size']}{tag} {r['note']}")
    print(f"\n{report['failures']} failed check(s) of {len(checks)}")


def run(quick: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checks = correctness(device, quick)
    return {
        "schema": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "device": device_info(device),
        "versions": versions(),
        "build": dict(_ext.build_info(), extension=_ext.load_error()),
        "checks": checks,
        "timings": timings(device, quick),
        "failures": sum(r["status"] == "fail" for r in checks),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="small grid and timings (under a minute on a CPU)",
    )
    p.add_argument(
        "--json",
        default="selftest.json",
        help="where to write the report (default ./selftest.json)",
    )
    args = p.parse_args(argv)
    report = run(args.quick)
    print_tables(report)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
