"""The layering rule: everything but the model stages imports without torch or PortAudio, so
`moonshine-live --help`, `grammar check` and `match` are instant and grammar code stands alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = [
    "moonshine_live",
    "moonshine_live.cli",
    "moonshine_live.engine.shutdown",
    "moonshine_live.asr.config",
    "moonshine_live.asr.transcript",
    "moonshine_live.errors",
    "moonshine_live.capture.audio",
    "moonshine_live.capture.ringbuffer",
    "moonshine_live.segment.vad",
    "moonshine_live.capture.sources",
    "moonshine_live.capture.mic",
    "moonshine_live.events",
    "moonshine_live.commands.bus",
    "moonshine_live.commands.dispatcher",
    "moonshine_live.commands.stage",
    "moonshine_live.grammar",
    "moonshine_live.grammar.matcher",
    "moonshine_live.grammar.normalize",
    "moonshine_live.commands.actions",
    "moonshine_live.model.config",
    "moonshine_live.accel.memory",
]
GRAMMAR_ONLY = [
    "moonshine_live.grammar",
    "moonshine_live.grammar.matcher",
    "moonshine_live.grammar.normalize",
]


def imported_after(modules: list[str]) -> set[str]:
    code = (
        "import sys, json\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    return set(json.loads(out.stdout))


def test_light_modules_import_without_torch_or_portaudio() -> None:
    loaded = imported_after(LIGHT_MODULES)
    heavy = {"torch", "sounddevice", "webrtcvad", "transformers", "onnxruntime", "safetensors"}
    assert not heavy & loaded, sorted(heavy & loaded)


@pytest.mark.parametrize("module", GRAMMAR_ONLY)
def test_grammar_code_needs_only_the_standard_library(module: str) -> None:
    loaded = imported_after([module])
    assert not {"numpy", "torch", "soundfile", "soxr"} & loaded
