"""The code's layout holds: imports point one way down the layers (mespot > spotting > flowcore),
no import circles, ruff finds nothing, no function over 80 lines. `make test` runs these."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flowcore", "spotting", "mespot")
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `make install` (or pip install -e '.[test]') brings it"
        )
    return str(found)


def test_import_contracts_hold():
    """The layers and acyclic contracts of pyproject.toml ([tool.importlinter])."""
    done = subprocess.run(
        [tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_function_over_80_lines():
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 80 lines: " + ", ".join(long)


def test_ruff_finds_nothing():
    """ruff's checks of pyproject.toml ([tool.ruff]: line length 100, pyflakes, errors)."""
    done = subprocess.run([tool("ruff"), "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
