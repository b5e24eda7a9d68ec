"""The model's hot parts as AOTInductor packages, run without the compiler stack.

Why: loading a step saved by `aot_compile` needs dynamo and inductor imported, 2-3 s of every
warm start on a 2-core VM (`import torch._inductor.config` alone: 1.8 s, 2026-12-01). A package
is a shared library with a C++ entry point; torch's own loader (`torch._C._aoti`) runs it with
nothing else imported, in 5 ms. Its weights are not baked in: the model's tensors are handed over
as user-managed constants, so there is no second copy of them in memory.

Three packages, each for one utterance at a time: the encoder's layers (the stem stays eager, where
it is faster), the decode step, and the rows step of a search within a grammar (several hypotheses
and the free decode as rows of one batch over one cross K/V, every row's log-probabilities out; its
row count is dynamic). Everything a step reads or writes per utterance is an input: the self-
attention caches and the cross-attention K/V, one tensor per layer (caches as views into one stacked
tensor made the step 30% slower: each write to a view became a copy of the whole stack). The frame
axis is dynamic in both. A call that does not fit what a package was built for (a batch, a logit
mask, a padded frame mask, caches grown past the model's maximum, an unexpected layout) goes to the
JIT step or the eager encoder instead; `fits` decides.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from ..model.decoding import decode_step, rows_caches
from ..model.network import Encoder, Moonshine

MAX_FRAMES = 16384
"""Longest cross K/V the package accepts (about 390 s of audio; `transcribe_long` cuts files into
much shorter pieces)."""
MIN_FRAMES = 2
"""Export cannot mark a size-1 axis dynamic; `transcriber.SHORTEST_SAMPLES` pads audio to 2."""


class _StepWithInputs(nn.Module):
    """`decode_step` with the per-utterance tensors as arguments, for `torch.export`.

    `written` carries, as its length, how many cache positions the self-attention reads (this
    step's position + 1; see `Decoder.forward`): a dynamic size, so the step reads what was
    written instead of the whole cache (2 s: 0.3 of a 4.7 ms step, 2026-12-02).
    """

    def __init__(self, model: Moonshine) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, input_pos: Tensor, written: Tensor, k_caches: list[Tensor],
        v_caches: list[Tensor], cross_k: list[Tensor], cross_v: list[Tensor],
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        self.model.bind_step_state(k_caches, v_caches, cross_k, cross_v)
        return decode_step(self.model, tokens, input_pos, attend_to=written.shape[0])


class _RowsStepWithInputs(nn.Module):
    """One step of several rows over one utterance (a beam's hypotheses and a free row), for
    `torch.export`: every row's log-probabilities over the whole vocabulary (a search needs them
    all, not a greedy choice). The self-attention caches have a row each; the cross K/V, one
    utterance's, are shared (batch 1). `written` as in `_StepWithInputs`."""

    def __init__(self, model: Moonshine) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, input_pos: Tensor, written: Tensor, k_caches: list[Tensor],
        v_caches: list[Tensor], cross_k: list[Tensor], cross_v: list[Tensor],
    ) -> Tensor:  # fmt: skip
        self.model.bind_step_state(k_caches, v_caches, cross_k, cross_v)
        logits = self.model.decode_step(tokens, input_pos, attend_to=written.shape[0])[:, -1]
        return torch.log_softmax(logits, dim=-1)


@contextmanager
def _without_torch_deprecations() -> Iterator[None]:
    """Two warnings a user cannot act on, silenced by message, only while we build:
    - export and AOTInductor in torch 2.13 trip over their own deprecated API (a FutureWarning,
      `isinstance(treespec, LeafSpec)`, raised in copyreg while they copy a tree spec);
    - export's note that the layers' `cross_k`/`cross_v` were assigned during export: that is
      `_StepWithInputs` handing them in, on purpose. Registered as buffers they would be quiet
      here, but dynamo then specializes their frame axis and the JIT step (batches) recompiles
      for every utterance length."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        warnings.filterwarnings(
            "ignore",
            message=r"The tensor attributes (self\.model\.decoder\.layers\.\d+\.cross_[kv](, )?)+ "
            "were assigned during export",
            category=UserWarning,
        )
        yield


def _attend_limit(model: Moonshine) -> int:
    """Most positions the packaged self-attention reads: one short of the cache, since export
    specializes a slice that could cover the whole cache (a no-op) away from the dynamic size.
    The last position of a full-length decode goes to the JIT step."""
    return model.config.max_position_embeddings - 1


def _written(count: int) -> Tensor:
    """A tensor whose only meaning is its length: `_StepWithInputs`'s `written`."""
    return torch.empty(count, dtype=torch.uint8)


def standard_caches(model: Moonshine) -> bool:
    """Whether the self-attention caches have the size a package is built for: batch 1 and the
    model's maximum positions (`decoding._ensure_caches` grows them only for longer budgets)."""
    cache = model.decoder.layers[0].kv_cache
    return (
        cache is not None
        and cache.k_cache.shape[0] == 1
        and cache.k_cache.shape[2] == model.config.max_position_embeddings
    )


def build_package(model: Moonshine, tokens: Tensor, input_pos: Tensor, path: Path) -> None:
    """Export the step for this model (its current caches and cross K/V as example inputs) and
    compile it into a package at `path`, written atomically. Needs `standard_caches` and a C++
    compiler; slow (30-40 s on 2 cores)."""
    import torch._inductor
    import torch._inductor.inductor_prims  # registers the prim `quantized._stored` uses

    from .inductor import use_compile_cache

    if not standard_caches(model):
        raise ValueError("a package is built on batch-1 caches of the model's maximum length")
    use_compile_cache()
    layers = model.decoder.layers
    saved = model.step_state()
    # copies: inputs that alias the model's own buffers cannot be mutated in an export
    k_caches, v_caches, cross_k, cross_v = ([t.clone() for t in ts] for ts in model.step_state())
    frames = torch.export.Dim("frames", min=MIN_FRAMES, max=MAX_FRAMES)
    written = torch.export.Dim("written", min=1, max=_attend_limit(model))
    count = len(layers)
    dynamic = {
        "tokens": None, "input_pos": None, "written": {0: written},
        "k_caches": [None] * count, "v_caches": [None] * count,
        "cross_k": [{2: frames}] * count, "cross_v": [{2: frames}] * count,
    }  # fmt: skip
    try:  # export assigns (fake) example inputs to the model's attributes: put ours back
        with _without_torch_deprecations():
            exported = torch.export.export(
                _StepWithInputs(model),
                # 2 positions: an example size of 1 would be specialized
                (tokens, input_pos, _written(2), k_caches, v_caches, cross_k, cross_v),
                dynamic_shapes=dynamic,
                strict=False,
            )
    finally:
        model.bind_step_state(*saved)
    compile_package(exported, path)


MAX_ROWS = 8
"""Most rows a rows step takes (the int8 op's batch: `assets/int8_gemv.cpp` kMaxBatch)."""


def build_rows_package(model: Moonshine, path: Path, rows: int = 5) -> None:
    """Export the rows step (`_RowsStepWithInputs`: rows, frames and positions read dynamic)
    and compile it into a package at `path`. Needs a C++ compiler; slow (30-40 s on 2 cores)."""
    import torch._inductor
    import torch._inductor.inductor_prims  # registers the prim `quantized._stored` uses

    from .inductor import use_compile_cache

    use_compile_cache()
    saved = model.step_state()
    k_caches, v_caches = ([t.normal_() for t in ts] for ts in rows_caches(model, rows))
    cross_k, cross_v = ([t[:1, :, :50].clone() for t in ts] for ts in (k_caches, v_caches))
    count = len(model.decoder.layers)
    batch = torch.export.Dim("rows", min=1, max=MAX_ROWS)
    frames = torch.export.Dim("frames", min=MIN_FRAMES, max=MAX_FRAMES)
    written = torch.export.Dim("written", min=1, max=_attend_limit(model))
    dynamic = {
        "tokens": {0: batch}, "input_pos": None, "written": {0: written},
        "k_caches": [{0: batch}] * count, "v_caches": [{0: batch}] * count,
        "cross_k": [{2: frames}] * count, "cross_v": [{2: frames}] * count,
    }  # fmt: skip
    tokens = torch.zeros(rows, 1, dtype=torch.long)
    try:
        with _without_torch_deprecations():
            exported = torch.export.export(
                _RowsStepWithInputs(model),
                (tokens, torch.tensor([1]), _written(2), k_caches, v_caches, cross_k, cross_v),
                dynamic_shapes=dynamic,
                strict=False,
            )
    finally:
        model.bind_step_state(*saved)
    compile_package(exported, path)


def compile_package(exported: torch.export.ExportedProgram, path: Path) -> None:
    """Compile an exported program into a package at `path`, atomically, its weights left out
    (`load_package` hands it the model's own tensors)."""
    import torch._inductor

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.pt2")
    os.close(handle)
    try:
        with _without_torch_deprecations():
            torch._inductor.aoti_compile_and_package(
                exported,
                package_path=temporary,
                inductor_configs={"aot_inductor.package_constants_in_so": False},
            )
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def load_package(path: Path, module: nn.Module) -> tuple[object, dict[str, Tensor]]:
    """(runner, constants): the package at `path` bound to the tensors of `module`, the module
    it was exported from. Raises (RuntimeError, KeyError...) when the file is no package or not
    this module's. User-managed constants: the package reads the tensors in place, so they must
    outlive it even if the module replaces one (setup_caches makes a new causal mask); the
    caller keeps the returned references."""
    runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    names = runner.get_constant_fqns()
    missing = [name for name in names if name not in tensors]
    if missing:
        raise KeyError(f"the package wants tensors this model lacks: {missing[:3]}")
    constants = {name: tensors[name] for name in names}
    runner.load_constants(constants, False, True, True)
    return runner, constants


def build_encoder_package(encoder: Encoder, features: Tensor, path: Path) -> None:
    """Export the encoder's layers for one utterance (features [1, T, hidden] as the example,
    T dynamic) and compile them into a package at `path`."""
    from .inductor import use_compile_cache

    use_compile_cache()
    frames = torch.export.Dim("frames", min=MIN_FRAMES, max=MAX_FRAMES)
    with _without_torch_deprecations():
        exported = torch.export.export(
            encoder, (features,), dynamic_shapes={"x": {1: frames}}, strict=False
        )
    compile_package(exported, path)


class PackagedEncoder:
    """A loaded encoder package bound to one model's encoder; `fits` says when it applies."""

    def __init__(self, path: Path, encoder: Encoder) -> None:
        self._runner, self._constants = load_package(path, encoder)

    def fits(self, x: Tensor, key_mask: Tensor | None) -> bool:
        return (
            key_mask is None
            and x.shape[0] == 1
            and MIN_FRAMES <= x.shape[1] <= MAX_FRAMES
            and x.dtype == torch.float32
            and x.is_contiguous()
        )

    def __call__(self, x: Tensor) -> Tensor:
        return self._runner.run([x])[0]  # type: ignore[attr-defined]


class PackagedStep:
    """A loaded package bound to one model's tensors; call it like a batch-1 `StepFn`.

    The per-utterance inputs (caches, cross K/V) are checked and listed once per utterance, not
    per step: that took 0.15 ms of a 5 ms step (2026-12-01). A new utterance brings new cross K/V
    tensors, and reallocated caches are new tensors, so their identities say when to look again.
    """

    def __init__(self, path: Path, model: Moonshine) -> None:
        """Raises (RuntimeError, KeyError...) when the file is no package or not this model's."""
        self._runner, self._constants = load_package(path, _StepWithInputs(model))
        self._seen: tuple[Tensor | None, ...] = ()  # the tensors `_inputs` was made from
        self._inputs: list[Tensor] | None = None  # None: they do not fit
        self._written = _written(_attend_limit(model))  # sliced to each step's `written`

    def fits(
        self, model: Moonshine, tokens: Tensor, input_pos: Tensor, allowed: Tensor | None
    ) -> bool:
        """Whether this call has the shapes and layout the package was built for."""
        if (
            tokens.shape != (1, 1)
            or input_pos.shape != (1,)
            or not 0 <= int(input_pos) < len(self._written)
            or allowed is not None
            or model.decoder.cross_mask is not None
        ):
            return False
        layers = model.decoder.layers
        cache = layers[0].kv_cache
        seen = (
            None if cache is None else cache.k_cache,
            *(layer.cross_k for layer in layers),
            *(layer.cross_v for layer in layers),
        )
        changed = len(seen) != len(self._seen) or any(
            a is not b for a, b in zip(seen, self._seen, strict=True)
        )
        if changed:
            self._seen, self._inputs = seen, self._fitting_inputs(model)
        return self._inputs is not None

    @staticmethod
    def _fitting_inputs(model: Moonshine) -> list[Tensor] | None:
        k_caches, v_caches, cross_k, cross_v = model.step_state()
        frames = cross_k[0].shape[2]
        fit = (
            MIN_FRAMES <= frames <= MAX_FRAMES
            and standard_caches(model)
            and all(
                t.shape == k_caches[0].shape and t.dtype == torch.float32 and t.is_contiguous()
                for t in (*k_caches, *v_caches)
            )
            and all(
                t.shape == cross_k[0].shape and t.dtype == torch.float32 and t.is_contiguous()
                for t in (*cross_k, *cross_v)
            )
        )
        return [*k_caches, *v_caches, *cross_k, *cross_v] if fit else None

    def __call__(
        self, model: Moonshine, tokens: Tensor, input_pos: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One step; `fits` must have passed for the model's current utterance."""
        assert self._inputs is not None, "call fits first"
        written = self._written[: int(input_pos) + 1]
        token, logprob = self._runner.run([tokens, input_pos, written, *self._inputs])  # type: ignore[attr-defined]
        return token, logprob


class PackagedRowsStep:
    """A loaded rows-step package bound to one model's tensors, called like
    `decoding.rows_step` without the model: (tokens [R, 1], position, step state) ->
    log-probabilities [R, vocab]."""

    def __init__(self, path: Path, model: Moonshine) -> None:
        """Raises (RuntimeError, KeyError...) when the file is no package or not this model's."""
        self._runner, self._constants = load_package(path, _RowsStepWithInputs(model))
        self._written = _written(_attend_limit(model))

    def fits(self, model: Moonshine, position: int, state: tuple[list[Tensor], ...]) -> bool:
        k_caches, _, cross_k, _ = state
        return (
            0 <= position < len(self._written)
            and 1 <= k_caches[0].shape[0] <= MAX_ROWS
            and k_caches[0].shape[2] == model.config.max_position_embeddings
            and cross_k[0].shape[0] == 1
            and MIN_FRAMES <= cross_k[0].shape[2] <= MAX_FRAMES
            and all(t.dtype == torch.float32 for t in (k_caches[0], cross_k[0]))
        )

    def __call__(self, tokens: Tensor, position: int, state: tuple[list[Tensor], ...]) -> Tensor:
        """One step; every tensor of `state` must be contiguous (row slices of `rows_caches`
        are)."""
        written = self._written[: position + 1]
        inputs = [tokens, torch.tensor([position]), written]
        for tensors in state:
            inputs.extend(tensors)
        return self._runner.run(inputs)[0]  # type: ignore[attr-defined]
