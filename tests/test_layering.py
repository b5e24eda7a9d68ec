"""The layering rule: everything but the model stages imports without torch or PortAudio, so
`moonshine-live --help`, `grammar check` and `match` are instant and grammar code stands alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = [
    "moonshine_live",
    "moonshine_live.cli",
    "moonshine_live.shutdown",
    "moonshine_live.config",
    "moonshine_live.messages",
    "moonshine_live.errors",
    "moonshine_live.audio",
    "moonshine_live.ringbuffer",
    "moonshine_live.vad",
    "moonshine_live.sources",
    "moonshine_live.mic",
    "moonshine_live.events",
    "moonshine_live.bus",
    "moonshine_live.dispatcher",
    "moonshine_live.commands",
    "moonshine_live.grammar",
    "moonshine_live.matcher",
    "moonshine_live.normalize",
    "moonshine_live.actions",
    "moonshine_live.model_config",
    "moonshine_live.memory",
]
GRAMMAR_ONLY = ["moonshine_live.grammar", "moonshine_live.matcher", "moonshine_live.normalize"]


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
