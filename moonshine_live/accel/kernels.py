"""Our C++ kernels: compiled on the machine that runs them (g++, once, into the compile cache) and
loaded as torch ops in the `moonshine_live` namespace; where they cannot run, a warning and the
torch path.

Two libraries, by CPU (Linux x86-64 only), and a process loads at most one of them because both
define `int8_linear`:
- `AMX_LIBRARY` on CPUs with AMX (Sapphire Rapids and later): the AMX linears (`amx.py`) and the
  decode-step int8 linears (`int8_kernel.py`);
- `INT8_LIBRARY` on other CPUs with AVX2 and FMA: the decode-step int8 linears alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

from ..host.cache import artifact_dir
from ..host.cache import load_or_build as load_or_build_artifact
from ..host.cpu import cpu_flags, cpu_vector_features

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Library:
    """One shared library of ops: its sources (under `assets/`) and the CPU flags it needs."""

    name: str
    sources: tuple[str, ...]
    flags: tuple[str, ...]
    """`/proc/cpuinfo` names; all of them must be present."""
    ops: tuple[str, ...]

    def source_paths(self) -> list[Path]:
        return [Path(str(files("moonshine_live") / "assets" / name)) for name in self.sources]


AMX_LIBRARY = Library(
    "amx-linear",
    ("amx_linear.cpp", "int8_gemv.cpp"),
    ("amx_tile", "amx_int8", "avx512f", "avx512bw"),
    ("amx_linear", "amx_pack", "int8_linear"),
)
INT8_LIBRARY = Library("int8-linear", ("int8_gemv.cpp",), ("avx2", "fma"), ("int8_linear",))
BUILD_EXPECTED_S = 15.0
"""About how long g++ takes for one library (2-core EPYC, 2026-12-07)."""


def supported(library: Library) -> bool:
    return set(library.flags) <= cpu_flags()


def has_op(name: str) -> bool:
    """Whether an op of ours is registered in this process (its library is loaded)."""
    return hasattr(torch.ops.moonshine_live, name)


def library_path(library: Library) -> Path:
    """Where `library` built from these sources, for this torch and CPU, is kept."""
    key = hashlib.sha256()
    for part in (
        *(source.read_bytes() for source in library.source_paths()),
        torch.__version__.encode(),
        cpu_vector_features().encode(),
    ):
        key.update(part)
    return artifact_dir() / f"{library.name}-{key.hexdigest()[:16]}.so"


def load_or_build(library: Library, path: Path) -> None:
    """Load the library at `path`, building it first if it is missing or does not load (a
    damaged or truncated cache). Raises OSError, RuntimeError or SubprocessError when it cannot."""
    load_or_build_artifact(
        path,
        f"{library.name} kernels",
        lambda: torch.ops.load_library(str(path)),
        lambda: build(library, path),
        BUILD_EXPECTED_S,
    )


def build(library: Library, path: Path, arch: str = "native") -> None:
    """Compile `library` into a shared library at `path`, atomically. `arch` is g++'s -march
    (another one builds the vector code of other CPUs, for tests)."""
    torch_dir = Path(torch.__file__).parent
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.so")
    os.close(handle)
    command = [
        os.environ.get("CXX", "g++"), "-O3", f"-march={arch}", "-fopenmp", "-shared", "-fPIC",
        "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include/torch/csrc/api/include'}",
        *map(str, library.source_paths()), "-o", temporary, f"-L{torch_dir / 'lib'}",
        "-ltorch", "-ltorch_cpu", "-lc10",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.strip()[-600:]}")
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
