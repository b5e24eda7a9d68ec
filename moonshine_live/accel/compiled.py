"""The decode step compiled: one graph for every utterance length, kept on disk.

Why a module of its own: compiling is where start-up time goes (tens of seconds the first time on
a small CPU), so everything that keeps it to once per machine lives here. On a CPU the
single-utterance step is an AOTInductor package (`packaged.py`), named by everything its
machine code depends on, and loaded without the compiler stack. Everything else (batches, masks,
CUDA) is `torch.compile(fullgraph=True)`, imported on first use: the cross-attention K/V length
(frames of audio) is marked dynamic before the first compile, so no utterance length recompiles
it, and inductor's caches live under our cache directory. On CUDA the step runs as CUDA graphs
(`mode="reduce-overhead"`): the same dynamic graph, recorded once per frame count, with frame
counts padded to buckets so that a few recordings serve all."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from ..checkpoint.weights import Checkpoint
from ..host.cache import artifact_dir, load_or_build
from ..host.cpu import cpu_vector_features
from ..model.decoding import StepState, decode_step, rows_step
from ..model.network import Encoder, Moonshine
from .inductor import use_compile_cache
from .packaged import (
    PackagedEncoder,
    PackagedRowsStep,
    PackagedStep,
    build_encoder_package,
    build_package,
    build_rows_package,
    standard_caches,
)

_LOGGER = logging.getLogger(__name__)

STEP_SOURCES = (
    "model/decoding.py", "model/network.py", "model/rope.py", "checkpoint/quantized.py",
    "accel/compiled.py", "accel/packaged.py", "accel/amx.py", "accel/int8_kernel.py",
    "assets/amx_linear.cpp", "assets/int8_gemv.cpp",
)  # fmt: skip
"""The modules (under the package) whose code a compiled step holds: part of its file name."""
BUILD_EXPECTED_S = 40.0
"""About how long building one package takes (2-core EPYC: encoder 30 s, step 28 s, 2026-12-07)."""
CUDA_FRAME_BUCKET = 64
"""CUDA graphs need fixed shapes: cross K/V are padded to a multiple of this many frames
(about 1.5 s of audio), so a 20 s chunk needs at most 14 recorded graphs."""


def precompiled_step_path(
    checkpoint: Checkpoint,
    device: torch.device,
    dtype: torch.dtype,
    int8: bool,
    part: str = "decode-step",
) -> Path:
    """The file of a precompiled `part` (the decode step or the encoder): one per model shape,
    weights form, device type, dtype, torch/package version, sources and CPU vector features (a
    package holds machine code: kernels built for one CPU's vector units crash another's, e.g. in
    a shared home directory)."""
    from .. import __version__

    config = checkpoint.config
    sources = hashlib.sha256()
    for module in STEP_SOURCES:  # an edited source (editable install) must not load stale code
        sources.update((Path(__file__).parent.parent / module).read_bytes())
    key = json.dumps(
        [
            dataclasses.asdict(config), str(dtype), device.type, int8,
            torch.__version__, __version__, sources.hexdigest(),
            platform.machine(), cpu_vector_features() if device.type == "cpu" else "",
        ],
        sort_keys=True,
        default=str,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return artifact_dir() / f"{part}-{digest}.pt2"


def _NO_TENSOR() -> None:
    """A dead weak reference: nothing marked or checked yet."""
    return None


Package = TypeVar("Package")


def _load_or_build(
    artifact: Path,
    what: str,
    load: Callable[[], Package],
    build: Callable[[], None],
    fallback: str,
) -> tuple[Package | None, bool]:
    """`host.cache.load_or_build`, or (None, False) with a warning when building fails (no
    compiler, export limits...): the caller keeps its slower path, which still works."""
    try:
        return load_or_build(artifact, what, load, build, BUILD_EXPECTED_S)
    except Exception as exc:
        _LOGGER.warning("cannot package the %s (%s); %s", what, exc, fallback)
        return None, False


class CompiledStep:
    """`decoding.decode_step` compiled, callable as a `StepFn`.

    Two compiled forms:
    - on a CPU, the single-utterance step (batch 1, no logit mask), the one live speech uses, as
      an AOTInductor package (`packaged.py`): built at the first warm-up and kept on disk,
      so later starts load it in milliseconds without importing dynamo or inductor;
    - `torch.compile` of the same function for everything else (batches, masks, CUDA), built on
      first use (the compiler stack is imported then) and served from inductor's own disk cache
      after that. Before it sees new cross K/V (a new utterance) their frame axis is marked
      dynamic, so one graph serves every utterance length.
    """

    def __init__(
        self,
        device: torch.device,
        artifact: Path | None = None,
        graphs: bool | None = None,
        jit: bool = True,
    ) -> None:
        """`graphs`: run as CUDA graphs with bucketed frames (None: exactly when on CUDA; True
        on a CPU runs that same configuration without the graphs, to test it). `jit=False`:
        what the package does not serve runs eagerly instead of being compiled (one-off work
        that found the package in the cache must not start a build)."""
        self.device = device
        self.jit = jit
        self.graphs = device.type == "cuda" if graphs is None else graphs
        self.pad_frames_to = CUDA_FRAME_BUCKET if self.graphs else 1
        self.artifact = None if self.graphs or device.type != "cpu" else artifact
        self._jit_step: Any = None  # built on first use: creating it imports dynamo
        self._package: PackagedStep | None = None
        self._package_failed = False
        self._marked = _NO_TENSOR  # the cross K/V last marked dynamic (weak reference)
        self.loaded_from_disk = False

    @property
    def _jit(self) -> Any:
        if self._jit_step is None:
            use_compile_cache()
            # CUDA graphs remove the per-kernel launch cost that dominates a one-token step on a
            # GPU; on a CPU, inductor's C++ kernels are called directly and graphs do not apply.
            mode = "reduce-overhead" if self.graphs else None
            # A C++ wrapper instead of inductor's Python one: a step calls ~70 kernels.
            options = None if self.graphs else {"cpp_wrapper": True}
            self._jit_step = torch.compile(decode_step, fullgraph=True, mode=mode, options=options)
        return self._jit_step

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

    def _load_or_build_package(self, model: Moonshine, tokens: Tensor, input_pos: Tensor) -> None:
        assert self.artifact is not None
        artifact = self.artifact
        self._package, self.loaded_from_disk = _load_or_build(
            artifact,
            "decode step",
            lambda: PackagedStep(artifact, model),
            lambda: build_package(model, tokens, input_pos, artifact),
            "using the JIT step",
        )
        self._package_failed = self._package is None

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
        if self.artifact is not None and not self._package_failed:
            if self._package is None and standard_caches(model) and allowed is None:
                self._load_or_build_package(model, tokens, input_pos)
            if self._package is not None and self._package.fits(model, tokens, input_pos, allowed):
                return self._package(model, tokens, input_pos)
        if not self.jit:
            return decode_step(*args)
        self._mark_dynamic(model)
        return self._jit(*args)


class CompiledEncoder:
    """The encoder's layers for one utterance as a package (`packaged.py`), built at the first
    warm-up and loaded from disk later; anything else (batches with a frame mask) runs eagerly.

    Compiled, the layers' norms, rotary, GELU and residual adds fuse around the matrix products:
    2 s of audio 38.8 -> 31.8 ms, 10 s 142 -> 137 ms (in-process A/B, 2026-12-01). The stem stays
    eager: compiled, it was slower (10 s: 170 vs 142 ms with it).
    """

    def __init__(self, encoder: Encoder, artifact: Path) -> None:
        self.encoder = encoder
        self.artifact = artifact
        self._package: PackagedEncoder | None = None
        self._failed = False
        self.loaded_from_disk = False

    def __call__(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        if self._package is None and not self._failed and key_mask is None and x.shape[0] == 1:
            self._load_or_build(x)
        if self._package is not None and self._package.fits(x, key_mask):
            return self._package(x)
        return self.encoder(x, key_mask)

    def _load_or_build(self, x: Tensor) -> None:
        self._package, self.loaded_from_disk = _load_or_build(
            self.artifact,
            "encoder",
            lambda: PackagedEncoder(self.artifact, self.encoder),
            lambda: build_encoder_package(self.encoder, x.contiguous(), self.artifact),
            "running it eagerly",
        )
        self._failed = self._package is None


class CompiledRowsStep:
    """`decoding.rows_step` (a search's hypotheses, one utterance) as a package on a CPU, built
    at its first use and loaded from disk later; what does not fit it (too many rows, another
    dtype) runs eagerly. The log-probabilities of a row equal the eager step's to float
    rounding."""

    def __init__(self, artifact: Path, build: bool = True) -> None:
        """`build=False`: a package missing from the cache is not built (one-off work that found
        the other packages there must not start a build); the search steps eagerly."""
        self.artifact = artifact
        self.build = build
        self._package: PackagedRowsStep | None = None
        self._failed = False
        self.loaded_from_disk = False

    def __call__(self, model: Moonshine, tokens: Tensor, position: int, state: StepState) -> Tensor:
        if self._package is None and not self._failed:
            if self.build or self.artifact.is_file():
                self._load_or_build(model)
            else:
                self._failed = True
        package = self._package
        if package is not None and package.fits(model, position, state):
            return package(tokens, position, state)
        return rows_step(model, tokens, position, state)

    def _load_or_build(self, model: Moonshine) -> None:
        self._package, self.loaded_from_disk = _load_or_build(
            self.artifact,
            "search step",
            lambda: PackagedRowsStep(self.artifact, model),
            lambda: build_rows_package(model, self.artifact),
            "searching with the eager step",
        )
        self._failed = self._package is None
