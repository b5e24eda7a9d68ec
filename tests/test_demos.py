"""The demos run as users run them, on real speech."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from speech import compose, tts_wav

from moonshine_live.capture.audio import write_wav

pytestmark = [pytest.mark.needs_weights, pytest.mark.needs_tts, pytest.mark.slow]

DEMOS = Path(__file__).parent.parent / "demos"


def test_embed_demo_runs_callbacks(tmp_path: Path) -> None:
    wav = tmp_path / "todo.wav"
    said = ["add milk to the list", "read the list", "clear the list", "read the list"]
    parts: list[Path | float] = [0.5]
    for text in said:
        parts += [tts_wav(text, "flite", variant="rms"), 1.0]
    write_wav(wav, compose(parts))
    result = subprocess.run(
        [sys.executable, str(DEMOS / "embed.py"), "--file", str(wav)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("ready")]
    assert lines == ["added 'milk'", "the list: milk", "cleared", "the list: (empty)"], (
        result.stdout
    )


def test_desktop_demo_help() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMOS / "desktop_control.py"), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "--dry-run" in result.stdout
