"""The command benchmark stays runnable: a short run in a fresh process gives its table.

The numbers themselves are the benchmark's business (`python benchmarks/commands.py`); here a few
clips go through ours only, and every one of them must be judged (right, wrong or missed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool
from speech import compose, tts_wav

from moonshine_live.capture.audio import write_wav

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


@pytest.mark.needs_weights
@pytest.mark.needs_tts
def test_command_benchmark_new_options_run(transcriber, tmp_path) -> None:
    """A tiny run of the voices, SNR noise and babble, the drinks grammar, spoken pauses and
    non-speech: every table is printed, every clip is heard clean and in each noise, and the
    JSON carries the new fields."""
    for tool in ("espeak-ng", "flite", "sox"):
        require_tool(tool)
    dump = tmp_path / "outcomes.json"
    argv = [sys.executable, str(BENCHMARKS / "commands.py"), "--limit", "3", "--voices", "quick",
            "--grammar", "drinks", "--snr", "10", "--noise", "pink,babble", "--pause-share", "1",
            "--sounds-per-kind", "1", "--skip-ort", "--skip-sphinx",
            "--json", str(dump)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    for title in ("voice family", "SNR", "noise", "grammar", "pause", "kind"):
        assert f"by {title} (test split):" in result.stdout
    titles = [line for line in result.stdout.splitlines() if line.startswith("by ")]
    assert titles[-1] == "by recognizer and condition (test split):"  # the headline comes last
    outcomes = json.loads(dump.read_text())
    ours = [o for o in outcomes if o["recognizer"] == "ours"]
    assert {o["condition"] for o in ours} == {"clean", "pink@10dB", "babble@10dB"}
    assert len(ours) == 3 * 6  # 3 commands and 3 non-commands, each in 3 conditions
    kinds = {o["item"]["kind"] for o in ours}
    assert kinds == {"command", "chatter", "near-miss", "non-speech"}
    commands = [o for o in ours if o["item"]["kind"] == "command"]
    assert all(o["item"]["grammar"] == "drinks" and o["item"]["pause_s"] > 0 for o in commands)
    assert {o["verdict"] for o in commands} <= {"right", "wrong", "missed"}
    assert all(o["split"] in ("dev", "test") and o["snr"] in ("clean", "10dB") for o in ours)
    rejection = [o for o in outcomes if o["recognizer"] == "ours-constrained+rejection"]
    assert len(rejection) == len(ours) and rejection[0]["threshold"] is not None


@pytest.mark.needs_weights
@pytest.mark.needs_tts
def test_live_benchmark_compares_the_decodes_and_early_commit(transcriber, tmp_path) -> None:
    """The live replay, at full speed on a short recording: both decodes, the early-commit run
    and the silent stretch all report (the decode comparison once crashed after its runs)."""
    wav = tmp_path / "two.wav"
    write_wav(wav, compose([0.4, tts_wav("turn on the kitchen lights", "flite", variant="slt"),
                            1.0, tts_wav("next track", "flite", variant="rms"), 0.8]))  # fmt: skip
    argv = [sys.executable, str(BENCHMARKS / "live.py"), "--fast", "--repeat", "1",
            "--silence-s", "1", "--early-commit", "150", "--file", str(wav)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in ("end of speech -> command p50, constrained/free:", "commands only constrained:",
                 "early commits:", "CPU while silent:"):  # fmt: skip
        assert line in result.stdout, result.stdout


@pytest.mark.needs_tts
def test_segment_benchmark_judges_every_command(tmp_path) -> None:
    """Two short streams, clean and in pink noise, and a noise-only one, through both
    segmenters: every command gets one verdict, and clean speech through today's segmenter
    comes out as one utterance per command said in one go, with no noise utterances."""
    for tool in ("espeak-ng", "flite", "sox"):
        require_tool(tool)
    dump = tmp_path / "segments.json"
    argv = [sys.executable, str(BENCHMARKS / "segments.py"), "--minutes", "1.5", "--stream-s",
            "45", "--noise-minutes", "0.75", "--noises", "pink", "--snrs", "10", "--voices",
            "quick", "--json", str(dump)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {(row["condition"], row["segmenter"]): row for row in json.loads(dump.read_text())}
    assert set(rows) == {(c, s) for c in ("clean", "pink@10dB") for s in ("webrtc", "webrtc-a3")}
    for (condition, segmenter), row in rows.items():
        assert f"{condition} " in result.stdout and f" {segmenter} " in result.stdout
        verdicts = row["one"] + row["split"] + row["merged"] + row["missed"]
        assert verdicts == row["commands"] >= 8, row
        assert row["speech_s"] == 90 and row["silent_s"] == 45 and row["cpu_s"] > 0
    clean = rows["clean", "webrtc"]
    assert clean["unpaused_one"] >= 0.9 * clean["unpaused"]  # a pause inside may split one
    assert clean["one"] >= 0.8 * clean["commands"]
    assert clean["noise_utterances"] == clean["silent_utterances"] == 0
    assert len(clean["onset_ms"]) == clean["one"] and max(map(abs, clean["onset_ms"])) < 300
