"""The repository stands alone: a user who clones it has no ``../shared`` (the project's data copy and
its notes on each original). Only tests, CI (``.ci/``) and ``data_prep/`` (the offline cache's
defaults) may name it. Code comments cite the original's file instead, or the bug IDs of the method
README's deviation table, which must then define them."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXEMPT = ("tests/", ".ci/", "data_prep/")

# The shared folder itself, its notes (specs/*.md, cited by name or by a bare "§" section) and seeds.
SHARED = re.compile(
    r"\.\./shared|/work/shared|\bshared/(?:specs|data|seeds)\b"
    r"|\b(?:plremix_dividemix|lra_dmlp|ieg_nmtune|kernels_and_anchors|paper_numbers)\.md\b"
    r"|§|\bspecs?/\w+\.md\b"
    r"|(?:parent|REPO|ROOT)\s*/\s*[\"']shared[\"']"
)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


def shared_references(files: list[str]) -> list[str]:
    hits = []
    for name in files:
        if name.startswith(EXEMPT):
            continue
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binaries (fixtures, images)
        for number, line in enumerate(text.splitlines(), 1):
            if SHARED.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:120]}")
    return hits


def test_no_file_outside_tests_ci_and_data_prep_refers_to_shared():
    hits = shared_references(tracked_files())
    assert not hits, (
        "references to ../shared or its notes (cite the original's file or the README's "
        "deviation table instead):\n" + "\n".join(hits)
    )


def test_the_pattern_catches_each_kind_of_reference():
    caught = [
        "--data_path ../shared/data/cifar10",
        "see /work/shared/specs",
        "(specs/lra_dmlp.md Part A)",
        "spec §13.1 P14",
        "ieg_nmtune.md B3",
        'ROOT.parent / "shared" / "data"',
    ]
    missed = [
        "shared memory per block",
        "the shared parser",
        "data/cifar10",
        "lnl/presets/dmlp.yaml",
    ]
    assert all(SHARED.search(s) for s in caught)
    assert not any(SHARED.search(s) for s in missed)


# Bug IDs cited in code ("P14", "B.7.2", "A.9.9") must be rows of a method README's deviation table:
# a table cell holding only IDs ("P4/P5", "A.9.2, A.9.16").
ID = r"(?:P[1-9]\d?|[AB]\.\d{1,2}\.\d{1,2})"
BUG_ID = re.compile(rf"\b({ID})\b")
ID_CELL = re.compile(rf"^\s*{ID}(?:\s*[,/]\s*{ID})*\s*$")


def table_ids() -> set[str]:
    ids = set()
    for readme in REPO.glob("methods/*/README.md"):
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("|"):
                cells = [c for c in line.strip().strip("|").split("|") if ID_CELL.match(c)]
                ids.update(i for c in cells for i in BUG_ID.findall(c))
    return ids


def test_every_bug_id_cited_in_code_is_a_row_of_a_deviation_table():
    defined = table_ids()
    missing = []
    for name in tracked_files():
        if not name.endswith((".py", ".h", ".cpp", ".cu", ".cuh", ".yaml")) or name.startswith(
            EXEMPT
        ):
            continue
        for number, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1):
            missing += [f"{name}:{number}: {i}" for i in BUG_ID.findall(line) if i not in defined]
    assert defined and not missing, "bug IDs with no row in methods/*/README.md:\n" + "\n".join(
        missing
    )
