"""Inductor's settings for our builds: its caches under ours, and no probe subprocesses.

Shared by the JIT step (`compiled.py`) and the package builds (`packaged.py`).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..host.cache import artifact_dir


def use_compile_cache(directory: Path | None = None) -> Path:
    """Point inductor's on-disk caches at our cache directory unless the user chose one.

    Inductor fills in its default (a per-user temp directory) when dynamo is first imported, so
    a value equal to that default counts as not chosen.
    """
    import torch._inductor.config
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory or artifact_dir())
    os.environ.setdefault(
        "TRITON_CACHE_DIR", str(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]) / "triton")
    )
    if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") is None:
        # Inductor otherwise proves each CPU vector ISA on every start by building and loading a
        # probe library in a subprocess (2-3 s); the CPU's own feature flags already say which
        # ISAs exist, and a build that fails anyway falls back to the eager step.
        torch._inductor.config.cpp.vec_isa_ok = True
        _probe_libraries_in_process()
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def _probe_libraries_in_process() -> None:
    """Load inductor's AVX-512 VNNI / AMX / BF16 probe libraries here, not in child Pythons.

    `vec_isa_ok` covers only the base ISA; each extension is still proven by building a tiny
    library (cached after the first start) and loading it in a new Python process, about 0.1 s
    apiece and 0.5-0.8 s of every warm start (2026-12-01). Loading it in this process is the
    same check: the CPU flags were already read, and loading runs none of the probe's code.
    A torch without this private hook keeps its own probes.
    """
    from torch._inductor import cpu_vec_isa

    isa_class = getattr(cpu_vec_isa, "VecISA", None)
    if isa_class is not None and hasattr(isa_class, "_probe_load"):
        isa_class._probe_load = _load_probe_library


def _load_probe_library(isa: object, output_path: str) -> bool:
    """`VecISA._probe_load` without the child process: whether the library loads."""
    try:
        ctypes.CDLL(output_path)
    except OSError:
        return False
    return True
