"""The decode step under `torch.compile`: one graph for every utterance length, cached on disk.

Why a module of its own: compiling is where start-up time goes (tens of seconds the first time on
a small CPU), so everything that keeps it to once per machine lives here. The step is compiled
with `fullgraph=True`; the cross-attention K/V length (frames of audio) is marked dynamic before
the first compile, so no utterance length ever recompiles it; inductor's caches live under our
cache directory, so a second start loads the compiled kernels instead of building them. On CUDA
the step runs as CUDA graphs (`mode="reduce-overhead"`): the same dynamic graph, recorded once
per frame count, with frame counts padded to buckets so that a few recordings serve all.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import platform
import weakref
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config
import torch._inductor.inductor_prims  # registers the prim `quantized._stored` uses
from torch import Tensor

from .decoding import decode_step
from .model import Moonshine
from .weights import Checkpoint

_LOGGER = logging.getLogger(__name__)

CACHE_SUBDIR = "compiled"
"""Inductor's cache (kernels, graphs) under `embedded.cache_root()`."""
STEP_SOURCES = ("decoding.py", "model.py", "quantized.py", "compiled.py")
"""The modules whose code a compiled step holds: part of the precompiled step's file name."""
CUDA_FRAME_BUCKET = 64
"""CUDA graphs need fixed shapes: cross K/V are padded to a multiple of this many frames
(about 1.5 s of audio), so a 20 s chunk needs at most 14 recorded graphs."""


def compile_cache_dir() -> Path:
    from .embedded import cache_root

    return cache_root() / CACHE_SUBDIR


def use_compile_cache(directory: Path | None = None) -> Path:
    """Point inductor's on-disk caches at our cache directory unless the user chose one.

    Inductor fills in its default (a per-user temp directory) when dynamo is first imported, so
    a value equal to that default counts as not chosen.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory or compile_cache_dir())
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


def _vector_isa(device: torch.device) -> str:
    """The vector instruction set inductor builds CPU kernels for (e.g. "avx2", "avx512 ...")."""
    if device.type != "cpu":
        return ""
    use_compile_cache()  # the ISA check below must see our settings
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa())


def precompiled_step_path(
    checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, int8: bool
) -> Path:
    """The precompiled step's file: one per model shape, weights form, device type, dtype,
    torch/package version, step sources and CPU vector ISA (the artifact's own guards catch a
    wrong model, but not code or a CPU it was not built for)."""
    from . import __version__

    config = checkpoint.config
    sources = hashlib.sha256()
    for module in STEP_SOURCES:  # an edited source (editable install) must not load stale code
        sources.update((Path(__file__).parent / module).read_bytes())
    key = json.dumps(
        [
            dataclasses.asdict(config), str(dtype), device.type, int8,
            torch.__version__, __version__, sources.hexdigest(),
            # kernels built for one CPU's vector units crash another's (a shared home directory)
            platform.machine(), _vector_isa(device),
        ],
        sort_keys=True,
        default=str,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return compile_cache_dir() / f"decode-step-{digest}.bin"


def _NO_TENSOR() -> None:
    """A dead weak reference: nothing marked or checked yet."""
    return None


class CompiledStep:
    """`decoding.decode_step` compiled, callable as a `StepFn`.

    Two compiled forms share one cache directory:
    - the precompiled single-utterance step (batch 1, no logit mask), the one live speech uses:
      compiled ahead of time at the first warm-up and saved whole (guards, graph and kernels), so
      later starts load it in about a second instead of re-tracing the model;
    - `torch.compile` of the same function for everything else (batches, masks), built on
      first use and served from inductor's own disk cache after that.
    Before a step sees new cross K/V (a new utterance) their frame axis is marked dynamic, so one
    graph serves every utterance length.
    """

    def __init__(
        self, device: torch.device, artifact: Path | None = None, graphs: bool | None = None
    ) -> None:
        """`graphs`: run as CUDA graphs with bucketed frames (None: exactly when on CUDA; True
        on a CPU runs that same configuration without the graphs, to test it)."""
        use_compile_cache()
        self.device = device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        # CUDA graphs remove the per-kernel launch cost that dominates a one-token step on a GPU;
        # on a CPU, inductor's C++ kernels are called directly and graphs do not apply.
        mode = "reduce-overhead" if self.graphs else None
        # A C++ wrapper instead of inductor's Python one: the step calls ~70 kernels, and the
        # Python wrapper's module needs inductor's lowering code imported (1 s of every start).
        options = None if self.graphs else {"cpp_wrapper": True}
        self._jit = torch.compile(decode_step, fullgraph=True, mode=mode, options=options)
        self.pad_frames_to = CUDA_FRAME_BUCKET if self.graphs else 1
        self.artifact = None if self.graphs else artifact  # graphs: recorded per process
        self._single: Any = None  # torch's AOTCompiledFunction (experimental API)
        self._marked = _NO_TENSOR  # the cross K/V last marked dynamic (weak reference)
        self._checked = _NO_TENSOR  # the cross K/V the precompiled step's guards last passed
        self.loaded_from_disk = False

    def _mark_dynamic(self, model: Moonshine) -> None:
        first = model.decoder.layers[0].cross_k
        if self._marked() is first:
            return
        for layer in model.decoder.layers:
            for tensor in (layer.cross_k, layer.cross_v):
                torch._dynamo.mark_dynamic(tensor, 2)
        if model.decoder.cross_mask is not None:
            torch._dynamo.mark_dynamic(model.decoder.cross_mask, 3)
        self._marked = weakref.ref(first)

    def _load_or_build_single(self, model: Moonshine, args: tuple) -> None:
        """The precompiled single-utterance step: from disk if a usable one is there, else built
        now and saved (atomically) for the next start."""
        assert self.artifact is not None
        if self.artifact.is_file():
            try:
                # in the grad mode of the steps it will run: a loader's global state is guarded
                with self.artifact.open("rb") as file, torch.inference_mode():
                    loaded = torch.compiler.load_compiled_function(
                        file, f_globals=decode_step.__globals__
                    )
                if loaded.guard_check(*args):
                    self._single, self.loaded_from_disk = loaded, True
                    return
                _LOGGER.info("%s does not fit this model; compiling again", self.artifact)
            except Exception as exc:  # stale or foreign artifact: rebuild it
                _LOGGER.info("cannot load %s (%s); compiling again", self.artifact, exc)
        _LOGGER.warning(
            "compiling the decode step for this machine (about a minute on 2 cores, once; "
            "later starts load it from %s)",
            self.artifact.parent,
        )
        self._mark_dynamic(model)
        built = self._jit.aot_compile((args, {}))
        self.artifact.parent.mkdir(parents=True, exist_ok=True)
        try:
            built.save_compiled_function(str(self.artifact))
        except Exception as exc:  # an unwritable cache costs the next start time, nothing else
            _LOGGER.warning("cannot save the compiled step to %s: %s", self.artifact, exc)
        self._single = built

    def __call__(
        self, model: Moonshine, tokens: Tensor, input_pos: Tensor, allowed: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        args = (model, tokens, input_pos, allowed)
        if self.graphs:
            self._mark_dynamic(model)
            # A CUDA-graph replay reuses its output memory: copy the (tiny) outputs out first.
            torch.compiler.cudagraph_mark_step_begin()
            token, logprob = self._jit(*args)
            return token.clone(), logprob.clone()
        if tokens.shape[0] == 1 and allowed is None and self.artifact is not None:
            return self._call_single(model, args)
        self._mark_dynamic(model)
        return self._jit(*args)

    def _call_single(self, model: Moonshine, args: tuple) -> tuple[Tensor, Tensor]:
        """The precompiled step. Its guards (a few hundred tensor checks, about 0.5 ms) run on an
        utterance's first step only: later steps change nothing the guards look at (same model
        tensors, same cross K/V, token and position of fixed shape and dtype)."""
        if self._single is None:
            self._load_or_build_single(model, args)
        assert self._single is not None
        cross = model.decoder.layers[0].cross_k
        if self._checked() is not cross:
            self._checked = _NO_TENSOR
            if not self._single.guard_check(*args):
                _LOGGER.info("precompiled step does not fit this call; using the JIT step")
                self._mark_dynamic(model)
                return self._jit(*args)
            self._checked = weakref.ref(cross)
        return self._single.fn(*args)
