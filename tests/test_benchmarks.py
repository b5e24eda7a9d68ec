"""The command benchmark stays runnable: a short run in a fresh process gives its table.

The numbers themselves are the benchmark's business (`python benchmarks/commands.py`); here a few
clips go through ours only, and every one of them must be judged (right, wrong or missed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.needs_weights
@pytest.mark.needs_tts
def test_command_benchmark_runs(transcriber) -> None:  # the fixture warms the compile cache
    for tool in ("espeak-ng", "flite", "sox"):
        require_tool(tool)
    argv = [sys.executable, str(BENCHMARKS / "commands.py"), "--limit", "3", "--noise-db", "off",
            "--skip-ort", "--skip-sphinx"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ("ours", "ours-constrained", "ours-constrained+rejection"):
        row = next(line for line in lines if line.startswith(name + " "))  # all clips, clean
        right, wrong, missed = (float(cell.rstrip("%")) for cell in row.split()[2:5])
        assert right + wrong + missed == pytest.approx(100.0, abs=0.2), row
        assert right > 0, result.stdout  # three plain commands: at least one must come through
    assert "rejection threshold chosen on the dev split" in result.stdout
