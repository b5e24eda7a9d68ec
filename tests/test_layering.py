"""The layering rule: everything but the model stages imports without torch or PortAudio, so
`moonshine-live --help`, `grammar check` and `match` are instant and grammar code stands alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import moonshine_live

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


# -- the import graph, read from the source with `ast` ---------------------------------------------

PACKAGE_DIR = Path(moonshine_live.__file__).parent
STAGES = (
    ("__init__", "errors", "events"),  # the version, the exceptions and records all stages share
    ("host",),  # this machine: CPU facts, the disk cache, first-start progress
    ("capture",),
    ("segment",),
    ("model",),
    ("checkpoint",),
    ("accel",),
    ("asr",),
    ("grammar",),
    ("commands",),
    ("engine",),
    ("cli", "__main__", "config", "transcriber", "sources", "mic", "actions", "audio"),
)
"""The data flow, bottom to top: a module imports only from its own stage or earlier ones. The
last row is the top: the CLI and the old module paths kept for users (re-exports)."""
MAX_LINES = 500
MAX_ROOT_MODULES = 12


def stage_of(module: str) -> int:
    """The row of STAGES a module (dotted, under moonshine_live) belongs to."""
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(STAGES):
        if top in names:
            return rank
    raise AssertionError(
        f"{module}: its folder is in no stage of STAGES (add it in data-flow order)"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every package module `path` imports, at the top or inside a function."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("moonshine_live")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("moonshine_live"):
                continue
            for alias in node.names:  # `from . import kernels` imports a module
                name = f"{target}.{alias.name}"
                found.add(name if name in MODULES else target)
    return found - {module}


MODULES = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(
                "import cycle: " + " -> ".join([*path[path.index(module) :], module])
            )
        if module in done:
            return
        for imported in sorted(GRAPH.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_no_stage_imports_a_later_one() -> None:
    later = [
        f"{module} (stage {stage_of(module)}) imports {imported} (stage {stage_of(imported)})"
        for module, imported_set in GRAPH.items()
        for imported in imported_set
        if imported in MODULES and stage_of(imported) > stage_of(module)
    ]
    assert not later, "\n".join(sorted(later))


def test_every_import_names_a_real_module() -> None:
    """The graph above is only as good as its names: each one is a module of the package."""
    unknown = sorted({i for deps in GRAPH.values() for i in deps} - MODULES.keys())
    assert not unknown, unknown


def test_modules_stay_small_and_the_root_stays_short() -> None:
    long = {
        name: lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these (over {MAX_LINES} lines): {long}"
    root = sorted(p.name for p in PACKAGE_DIR.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_the_readme_layout_table_lists_every_folder() -> None:
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    folders = sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file())
    missing = [f for f in folders if f"`{f}/`" not in readme]
    assert not missing, f"README's layout table lacks {missing}"
