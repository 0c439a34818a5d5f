"""Mutation check of the CUDA emulation: does deleting one barrier make an emulation test fail?

The mutations: each ``__syncthreads()``, ``__syncwarp()``, ``cluster.sync()`` and ``grid.sync()`` of
``csrc/*/*_cuda.cu`` and ``csrc/*/*.cuh`` (comments aside) deleted, one at a time; then each
warp shuffle's and ``__ballot_sync``'s mask made partial (lane 31 left out, though it still calls).

One build serves them all: a scratch copy of csrc/ has every site wrapped in a switch on
``lnl_emu::mutant()`` (runtime.h; the LNL_EMU_MUTANT environment variable), e.g.
``(::lnl_emu::mutant() == 7 ? (void)0 : (void)(__syncthreads()))``, and build.py compiles the
emulation from it (LNL_EMU_CSRC) into a build folder of its own. With LNL_EMU_MUTANT unset the copy
is the source. Mutation i then runs its op's tests of tests/ops/test_cuda_emulation.py with
LNL_EMU_MUTANT=i and ``-x``: a failing test catches it; all passing, it survives. The source tree is
never written. (The test that caught the previous mutation runs first: neighbours share catchers.)

    python -m tests.ops.cuda_emulation.mutate [--kind barrier] [--only knn_kernels.cuh:82] [--log F]

prints one row per mutation (file:line, the call, caught by which test or SURVIVED) and the counts;
exit status 1 if any survived. ``make mutate`` runs it; tests/ops/test_cuda_emulation_mutations.py
runs the barrier deletions under pytest only with LNL_MUTATE=1 (not part of ``make test``: each
mutation is a pytest run of up to a few minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.ops.cuda_emulation.build import CSRC, OPS, ROOT

TESTS = "tests/ops/test_cuda_emulation.py"
CHEAPEST_FIRST = ("knn", "plr", "gmm")  # the run's order of ops (their emulation tests' cost)
PARTIAL_MASK = "0x7fffffffu"  # every lane but 31
_BARRIER = re.compile(
    r"__syncthreads\(\)|__syncwarp\([^()]*\)"
    r"|(?:(?:\w+::)*this_(?:cluster|grid)\(\)|\b\w+)\.sync\(\)"
)
_MASKED = re.compile(
    r"__(?:shfl(?:_up|_down|_xor)?|ballot|any|all)_sync\(\s*(?P<mask>[^,()]+?)\s*,"
)


@dataclass(frozen=True)
class Mutation:
    id: int
    path: str  # under csrc/
    line: int  # 1-based
    column: int  # 0-based start of the replaced text
    kind: str  # "barrier" or "mask"
    original: str

    @property
    def op(self) -> str:
        return self.path.split("/")[0]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def switched(self) -> str:
        """The site's text in the instrumented copy: the original unless this mutation is on."""
        on = f"::lnl_emu::mutant() == {self.id}"
        if self.kind == "barrier":
            return f"({on} ? (void)0 : (void)({self.original}))"
        return f"({on} ? {PARTIAL_MASK} : ({self.original}))"


def sources(csrc: Path = CSRC) -> list[Path]:
    return sorted(
        p for op in OPS for p in (*(csrc / op).glob("*_cuda.cu"), *(csrc / op).glob("*.cuh"))
    )


def find_mutations(csrc: Path = CSRC) -> list[Mutation]:
    """Every barrier deletion, then every partial shuffle/ballot mask, in file and line order."""
    barriers, masks = [], []
    for path in sources(csrc):
        rel = path.relative_to(csrc).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//")[0]
            barriers += [
                (rel, number, m.start(), "barrier", m.group(0)) for m in _BARRIER.finditer(code)
            ]
            masks += [
                (rel, number, m.start("mask"), "mask", m.group("mask"))
                for m in _MASKED.finditer(code)
            ]
    return [Mutation(i, *site) for i, site in enumerate(barriers + masks)]


def instrumented(text: str, mutations: list[Mutation]) -> str:
    """`text` (one file) with each of its mutation sites switched; right to left within a line."""
    lines = text.splitlines(keepends=True)
    for m in sorted(mutations, key=lambda m: (m.line, -m.column)):
        line = lines[m.line - 1]
        end = m.column + len(m.original)
        assert line[m.column : end] == m.original, f"{m.where}: not {m.original!r}"
        lines[m.line - 1] = line[: m.column] + m.switched() + line[end:]
    return "".join(lines)


def instrument(work: Path, mutations: list[Mutation]) -> Path:
    """A copy of csrc/ under `work` with every mutation site switched; returns its path."""
    copy = work / "csrc"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(CSRC, copy)
    for path in {m.path for m in mutations}:
        (copy / path).write_text(
            instrumented((CSRC / path).read_text(), [m for m in mutations if m.path == path])
        )
    return copy


def op_tests(op: str, tests: str = TESTS) -> list[str]:
    """The op's test functions in file order."""
    return re.findall(rf"^def (test_{op}_\w+)\(", (ROOT / tests).read_text(), re.M)


@dataclass
class Outcome:
    mutation: Mutation
    caught_by: str | None  # the first failing test (pytest id), None when every test passed
    reason: str  # the failure's one-line summary
    seconds: float


def _summary(output: str) -> tuple[str | None, str]:
    """(first failing test, its short reason) from pytest's -rfE summary lines."""
    for line in output.splitlines():
        m = re.match(r"(?:FAILED|ERROR) (.+?)(?: - (.*))?$", line)
        if m:
            return m.group(1).split("::", 1)[-1], (m.group(2) or "")[:120]
    return None, ""


def run_tests(env: dict, names: list[str], timeout: float, tests: str = TESTS) -> tuple[int, str]:
    """pytest -x over the named test functions, in that order (pytest keeps the command line's)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        *(f"{tests}::{name}" for name in names),
    ]
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        return -1, f"TIMEOUT after {timeout:.0f} s\n{e.stdout or ''}"
    return done.returncode, done.stdout + done.stderr


def run(
    mutations: list[Mutation],
    work: Path,
    timeout: float = 1800,
    log: Path | None = None,
    echo=print,
    tests: str = TESTS,
    baseline: bool = True,
) -> list[Outcome]:
    """Runs each mutation on one instrumented build under `work` (kept between calls: ninja rebuilds
    only what changed). Raises if the instrumented emulation, no mutation on, fails its tests."""
    copy = instrument(work, find_mutations())
    # COLUMNS: pytest's summary lines keep the failure's message only when they fit the width
    env = {
        **os.environ,
        "LNL_EMU_CSRC": str(copy),
        "LNL_EMU_BUILD": str(work / "build"),
        "COLUMNS": "400",
    }
    env.pop("LNL_EMU_MUTANT", None)
    order = {op: op_tests(op, tests) for op in CHEAPEST_FIRST if any(m.op == op for m in mutations)}
    for op, names in order.items():
        rc, out = run_tests(env, names, timeout, tests) if baseline else (0, "")
        if rc != 0:
            raise RuntimeError(f"the unmutated {op} emulation tests do not pass:\n{out[-3000:]}")
    outcomes = []
    for m in mutations:
        start = time.monotonic()
        rc, out = run_tests({**env, "LNL_EMU_MUTANT": str(m.id)}, order[m.op], timeout, tests)
        if rc not in (0, 1, -1) or "Error building extension" in out:
            raise RuntimeError(
                f"{m.where}: the emulation did not build or pytest broke:\n{out[-3000:]}"
            )
        test, reason = (
            _summary(out)
            if rc == 1
            else ((None, "") if rc == 0 else ("(timeout)", out.splitlines()[0]))
        )
        if test is not None and test.split("[")[0] in order[m.op]:  # move to front
            name = test.split("[")[0]
            order[m.op] = [name] + [n for n in order[m.op] if n != name]
        outcome = Outcome(m, test, reason, time.monotonic() - start)
        outcomes.append(outcome)
        echo(row(outcome))
        if log is not None:
            with log.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            **asdict(m),
                            "caught_by": test,
                            "reason": reason,
                            "seconds": round(outcome.seconds, 1),
                        }
                    )
                    + "\n"
                )
    return outcomes


def row(o: Outcome) -> str:
    m = o.mutation
    call = m.original if m.kind == "barrier" else f"mask {m.original} -> {PARTIAL_MASK}"
    caught = f"`{o.caught_by}`" if o.caught_by else "**SURVIVED**"
    return f"| {m.where} | `{call}` | {caught} | {o.reason.replace('|', '/')} |"


def counts(outcomes: list[Outcome]) -> str:
    parts = []
    for kind in ("barrier", "mask"):
        mine = [o for o in outcomes if o.mutation.kind == kind]
        if mine:
            survived = sum(o.caught_by is None for o in mine)
            parts.append(
                f"{kind}: {len(mine) - survived} caught, {survived} survived of {len(mine)}"
            )
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["barrier", "mask"], help="only these mutations")
    ap.add_argument(
        "--only", action="append", default=[], help="only mutations whose file:line contains this"
    )
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--log", type=Path, help="append one JSON line per mutation here")
    ap.add_argument(
        "--tests", default=TESTS, help="the emulation tests (path from the repository root)"
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run of each op's tests"
    )
    args = ap.parse_args(argv)
    muts = [
        m
        for m in find_mutations()
        if (args.kind in (None, m.kind)) and (not args.only or any(s in m.where for s in args.only))
    ]
    muts.sort(key=lambda m: (m.kind != "barrier", CHEAPEST_FIRST.index(m.op), m.id))
    if args.list:
        for m in muts:
            print(f"{m.id}\t{m.where}\t{m.kind}\t{m.original}")
        return 0
    print(
        "| site | mutation | caught by (first failing test) | failure |\n|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="lnl-mutate-") as tmp:
        outcomes = run(
            muts,
            args.work or Path(tmp),
            args.timeout,
            args.log,
            echo=lambda line: print(line, flush=True),
            tests=args.tests,
            baseline=not args.no_baseline,
        )
    print(counts(outcomes))
    return int(any(o.caught_by is None for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
