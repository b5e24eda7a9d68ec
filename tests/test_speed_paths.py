"""The fast decode path gives the float model's tokens: int8 weights, compiled step, disk cache.

The session `transcriber` (conftest) is what the live engine runs: a compiled decode step and the
checkpoint's own int8 decoder weights. Its weights are bit-identical to the float model's, so its
transcripts must be the eager float ones; a compiled graph serves every utterance length and a
second start loads it from disk. The reference is an eager float `Transcriber` (no compile, so
cheap to load). Compiling costs tens of seconds, so only the slow tests build a new graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._dynamo.utils
from speech import command_clips

from moonshine_live.accel.compiled import CompiledStep
from moonshine_live.accel.packaged import PackagedEncoder, PackagedStep
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber
from moonshine_live.capture.audio import SAMPLE_RATE, load_audio
from moonshine_live.checkpoint.quantized import Int8Embedding, Int8WeightLinear, QuantizedTensor
from moonshine_live.errors import ConfigError
from moonshine_live.model.decoding import DecodeResult, StepFn, decode_step, greedy_decode

BECKETT_TOKENS = (18274, 1898, 3926, 5229, 29892, 694, 4383, 1018, 1449, 4418, 1449, 4418, 2253)
BECKETT_TOKENS += (29889,)
"""Greedy float ids for beckett.wav, without start and end tokens (shared/notes/weights.md)."""
EOS_ID = 2
CLIP_COUNT = 24
MIN_SAME_FRACTION = 0.95
PADDING_CLIPS = (0, 5, 8, 13)
"""TTS clips decoded with padded cross K/V: espeak and flite voices, 1-2.2 s."""
SLICE_SECONDS = (0.3, 1.7, 4.0, 9.0)
"""Lengths of beckett cut for the no-recompile checks: from a few frames to most of the clip."""
BATCH_CLIPS = (8, 4, 17)
"""Three TTS clips of different lengths (2.2 s, 1.2 s, 0.9 s), so two rows are padded."""
WARM_START_TIMEOUT_S = 600
"""A warm start takes seconds; a cold compile on a slow 2-core machine about a minute."""


@pytest.fixture(scope="module")
def reference() -> Transcriber:
    """The eager float model: no compile, no int8."""
    return Transcriber(DecodeConfig(compile=False), warm_up=False)


@pytest.fixture(scope="module")
def beckett(beckett_path: Path) -> np.ndarray:
    return load_audio(beckett_path)


@dataclass(frozen=True)
class FixedMask:
    """A `LogitFilter` with one allowed set for every step (its state never changes)."""

    allowed_ids: tuple[int, ...]
    vocab_size: int

    def initial_state(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch_size, dtype=torch.long, device=device)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(state.shape[0], self.vocab_size, dtype=torch.bool, device=state.device)
        mask[:, list(self.allowed_ids)] = True
        return mask

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return state


def decode(
    transcriber: Transcriber, audio: np.ndarray, step: StepFn, pad_frames_to: int = 1, **kw
) -> DecodeResult:
    """One utterance through `greedy_decode` with the given step, as `transcribe` runs it."""
    with torch.inference_mode():
        features, frame_mask = transcriber.model.encode(torch.from_numpy(audio)[None])
        return greedy_decode(
            transcriber.model, features, frame_mask, [transcriber.budget(len(audio))],
            step=step, guard=transcriber.guard, pad_frames_to=pad_frames_to, **kw,
        )[0]  # fmt: skip


def unique_graphs() -> int:
    """Graphs dynamo has compiled in this process (a recompile adds one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


# -- settings -----------------------------------------------------------------------------------


def test_weights_setting_is_validated():
    assert DecodeConfig().weights == "auto"
    assert DecodeConfig(weights="int8", compile=True).weights == "int8"
    with pytest.raises(ConfigError, match=r"DecodeConfig\.weights"):
        DecodeConfig(weights="int4")


def test_int8_needs_compile():
    with pytest.raises(ConfigError, match=r"DecodeConfig\.weights.*compile=True"):
        DecodeConfig(weights="int8")


@pytest.mark.needs_weights
def test_int8_needs_cpu_float32():
    config = DecodeConfig(weights="int8", compile=True, device="cpu", dtype="bfloat16")
    with pytest.raises(ConfigError, match=r"DecodeConfig\.weights.*bfloat16"):
        Transcriber(config, warm_up=False)


# -- int8 modules -------------------------------------------------------------------------------


def random_int8_linear(out_features: int = 24, in_features: int = 40) -> Int8WeightLinear:
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (out_features, in_features), generator=generator)
    bias = torch.randn(out_features, generator=generator)
    return Int8WeightLinear(q.to(torch.int8), 0.0123, -3.0, bias)


def test_int8_linear_weight_is_the_dequantized_tensor():
    linear = random_int8_linear()
    expected = QuantizedTensor(linear.q, 0.0123, -3.0).dequantize()
    assert linear.weight().dtype == torch.float32
    assert torch.equal(linear.weight(), expected)


def test_int8_linear_eager_is_float_linear():
    linear = random_int8_linear()
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.linear(x, linear.weight(), linear.bias)
    assert torch.equal(linear(x), expected)


def test_int8_linear_compiled_matches_eager():
    """Under compile on CPU the product is a fused multiply-sum: same values up to fp32 rounding."""
    linear = random_int8_linear()
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(linear, fullgraph=True)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), linear(x))


def test_int8_embedding_rows_are_dequantized_rows():
    table = random_int8_linear()
    tokens = torch.tensor([[0, 5, 23, 5], [7, 1, 0, 12]])
    rows = Int8Embedding(table)(tokens)
    assert rows.shape == (2, 4, 40)
    assert torch.equal(rows, table.weight()[tokens])
    assert torch.equal(Int8Embedding(table).weight, table.weight())


@pytest.mark.needs_weights
def test_live_model_holds_the_checkpoints_int8(transcriber: Transcriber, reference: Transcriber):
    """Every per-step decoder linear and the tied head are int8; the cross k/v stay float; each
    int8 weight is exactly the float model's weight."""
    assert transcriber.compiled
    model, float_model = transcriber.model, reference.model
    int8_names = [f"attn.{p}_proj" for p in "qkvo"] + ["cross_attn.q_proj", "cross_attn.o_proj"]
    int8_names += ["mlp.fc1", "mlp.fc2"]
    for layer, float_layer in zip(model.decoder.layers, float_model.decoder.layers, strict=True):
        for name in int8_names:
            module = layer.get_submodule(name)
            assert isinstance(module, Int8WeightLinear), name
            assert module.q.dtype == torch.int8
            assert torch.equal(module.weight(), float_layer.get_submodule(name).weight), name
        for name in ("cross_attn.k_proj", "cross_attn.v_proj"):
            assert type(layer.get_submodule(name)) is torch.nn.Linear, name
    assert isinstance(model.head, Int8WeightLinear)
    embedding = model.decoder.embed_tokens
    assert isinstance(embedding, Int8Embedding)
    assert embedding.table.q.data_ptr() == model.head.q.data_ptr()
    assert torch.equal(model.head.weight(), float_model.decoder.embed_tokens.weight)
    # weights="auto" without compile is the float model
    assert float_model.head is None
    assert type(float_model.decoder.layers[0].mlp.fc1) is torch.nn.Linear


# -- tokens: compiled int8 == eager float -------------------------------------------------------


@pytest.mark.needs_weights
def test_beckett_tokens_match_float(transcriber, reference, beckett):
    ours, theirs = transcriber.transcribe(beckett), reference.transcribe(beckett)
    assert theirs.tokens == BECKETT_TOKENS
    assert ours.tokens == theirs.tokens
    assert ours.text == theirs.text


@pytest.mark.needs_weights
@pytest.mark.needs_tts
@pytest.mark.slow
def test_command_clips_match_float(transcriber, reference):
    differing = []
    for phrase, path in command_clips(CLIP_COUNT):
        audio = load_audio(path)
        ours, theirs = transcriber.transcribe(audio), reference.transcribe(audio)
        if ours.tokens != theirs.tokens:
            differing.append(f"{path.name} ({phrase!r}): ours {ours.text!r}, float {theirs.text!r}")

    assert len(differing) <= (1 - MIN_SAME_FRACTION) * CLIP_COUNT, "\n".join(differing)
    print(f"{CLIP_COUNT - len(differing)}/{CLIP_COUNT} clips identical; differing: {differing}")


# -- one graph for every length -----------------------------------------------------------------


@pytest.mark.needs_weights
def test_no_recompile_across_lengths(transcriber, reference, beckett, monkeypatch):
    """After warm-up, utterances of any length run the one packaged step, every step of them:
    dynamo compiles nothing (a recompile would raise), and the tokens stay the float model's."""
    calls = []
    packaged_call = PackagedStep.__call__
    monkeypatch.setattr(
        PackagedStep, "__call__", lambda self, *a: calls.append(1) or packaged_call(self, *a)
    )
    graphs = unique_graphs()
    steps = 0
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seconds in SLICE_SECONDS:
            audio = beckett[: round(seconds * SAMPLE_RATE)]
            ours = transcriber.transcribe(audio)
            assert ours.tokens == reference.transcribe(audio).tokens
            steps += len(ours.tokens) + 1  # the end-of-text step too
    assert unique_graphs() == graphs, "a new length compiled a new graph"
    assert len(calls) == steps, "some steps did not run the packaged step"


@pytest.mark.needs_weights
@pytest.mark.needs_tts
@pytest.mark.slow
def test_batch_matches_one_at_a_time(transcriber):
    """A batch (the JIT graph, with a frame mask) gives each utterance's own tokens."""
    clips = command_clips(max(BATCH_CLIPS) + 1)
    audios = [load_audio(clips[i][1]) for i in BATCH_CLIPS]
    assert len({len(a) for a in audios}) == len(audios)
    batched = transcriber.transcribe_batch(audios)
    alone = [transcriber.transcribe(a) for a in audios]
    assert [b.tokens for b in batched] == [a.tokens for a in alone]
    assert all(a.tokens for a in alone)


@pytest.mark.needs_weights
@pytest.mark.slow
def test_batch_no_recompile_across_lengths(transcriber, beckett):
    """The batched graph's frame axis is dynamic too: new lengths compile nothing."""
    rows = 3  # the batch size of test_batch_matches_one_at_a_time: its graph is reused
    transcriber.transcribe_batch([beckett[: (i + 1) * SAMPLE_RATE // 2] for i in range(rows)])
    graphs = unique_graphs()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seconds in SLICE_SECONDS[1:]:
            n = round(seconds * SAMPLE_RATE)
            batch = [beckett[: n // (i + 1)] for i in range(rows)]
            alone = [transcriber.transcribe(a).tokens for a in batch]
            assert [t.tokens for t in transcriber.transcribe_batch(batch)] == alone
    assert unique_graphs() == graphs, "a new length compiled a new graph"


# -- the precompiled step on disk ---------------------------------------------------------------


@pytest.mark.needs_weights
@pytest.mark.slow
def test_second_start_loads_the_step_from_disk(transcriber, beckett_path):
    """The session transcriber left the packaged step, encoder and search step in the cache; a
    new process loads them instead of compiling, never imports dynamo or inductor, transcribes
    beckett exactly and searches within a grammar on the packaged search step."""
    assert transcriber.compiled
    assert transcriber._step.artifact is not None and transcriber._step.artifact.is_file()
    grammar = (
        "from moonshine_live.commands.constrained import GrammarDecoder\n"
        "from moonshine_live.commands.stage import resolve_grammar_path\n"
        "from moonshine_live.grammar import load_grammar\n"
        "from moonshine_live.grammar.matcher import Matcher\n"
        "d = GrammarDecoder(t, Matcher(load_grammar([resolve_grammar_path('home')])))\n"
    )
    from moonshine_live.capture.audio import load_audio
    from moonshine_live.commands.constrained import GrammarDecoder
    from moonshine_live.commands.stage import resolve_grammar_path
    from moonshine_live.grammar import load_grammar
    from moonshine_live.grammar.matcher import Matcher

    decoder = GrammarDecoder(transcriber, Matcher(load_grammar([resolve_grammar_path("home")])))
    here = decoder.recognize(load_audio(beckett_path)[:32000])  # builds the search step if need be
    assert transcriber._rows_step.artifact.is_file()
    code = (
        "import json, logging\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from moonshine_live.capture.audio import load_audio\n"
        "from moonshine_live.asr.config import DecodeConfig\n"
        "from moonshine_live.asr.transcriber import Transcriber\n"
        "t = Transcriber(DecodeConfig(compile=True))\n"
        f"audio = load_audio({str(beckett_path)!r})\n"
        "r = t.transcribe(audio)\n" + grammar + "found = d.recognize(audio[:32000])\n"
        "import sys\n"
        "print(json.dumps({'loaded': t.compiled_from_cache, 'compiled': t.compiled,\n"
        "                  'tokens': list(r.tokens),\n"
        "                  'search loaded': t._rows_step.loaded_from_disk,\n"
        "                  'search': [list(found.free.tokens), found.text],\n"
        "                  'compiler imported': 'torch._dynamo' in sys.modules\n"
        "                                       or 'torch._inductor' in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WARM_START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        "loaded": True, "compiled": True, "tokens": list(BECKETT_TOKENS),
        "search loaded": True, "search": [list(here.free.tokens), here.text],
        "compiler imported": False,  # the packages run without dynamo and inductor
    }  # fmt: skip
    assert report == expected, result.stderr[-3000:]


@pytest.mark.needs_weights
@pytest.mark.slow
def test_corrupt_artifact_is_rebuilt(transcriber, beckett, tmp_path):
    """Garbage where the precompiled step should be: compiled again (inductor's cache keeps it
    to seconds), saved over the garbage, and the next start loads the new file."""
    artifact = tmp_path / "bad.pt2"
    garbage = b"not a compiled function\x00" * 100
    artifact.write_bytes(garbage)
    step = CompiledStep(torch.device("cpu"), artifact=artifact)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode(transcriber, beckett, step).tokens == BECKETT_TOKENS
    assert not step.loaded_from_disk
    assert artifact.read_bytes() != garbage
    # torch's export warnings (cross_k/cross_v assigned, LeafSpec) are not a user's business;
    # DeprecationWarnings are not shown by default, these two kinds are
    shown = [w for w in caught if issubclass(w.category, (FutureWarning, UserWarning))]
    assert not shown, [str(w.message)[:200] for w in shown]

    again = CompiledStep(torch.device("cpu"), artifact=artifact)
    assert decode(transcriber, beckett, again).tokens == BECKETT_TOKENS
    assert again.loaded_from_disk


@pytest.mark.needs_weights
@pytest.mark.slow
def test_failed_package_build_keeps_the_jit_step(transcriber, beckett, tmp_path, caplog):
    """No place to write the package (its folder is a file): a warning, the JIT step, and the
    same tokens; the next call does not try again."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    step = CompiledStep(torch.device("cpu"), artifact=blocked / "step.pt2")
    with caplog.at_level("WARNING", logger="moonshine_live.accel.compiled"):
        assert decode(transcriber, beckett, step).tokens == BECKETT_TOKENS
    assert "cannot package the decode step" in caplog.text
    assert step._package is None and step._package_failed and not step.loaded_from_disk
    assert decode(transcriber, beckett, step).tokens == BECKETT_TOKENS


@pytest.mark.needs_weights
def test_packaged_step_takes_only_calls_it_was_built_for(transcriber, beckett):
    """The package has fixed layouts baked in: anything else must go to the JIT step."""
    transcriber.transcribe(beckett[:SAMPLE_RATE])
    package, model = transcriber._step._package, transcriber.model
    assert package is not None
    token, position = torch.ones(1, 1, dtype=torch.long), torch.tensor([0])
    assert package.fits(model, token, position, None)
    assert not package.fits(model, token.repeat(2, 1), position, None)  # a batch
    last = model.config.max_position_embeddings - 1  # the whole cache: the JIT step's
    assert package.fits(model, token, torch.tensor([last - 1]), None)
    assert not package.fits(model, token, torch.tensor([last]), None)
    assert not package.fits(model, token, torch.tensor([0, 1]), None)
    assert not package.fits(
        model, token, position, torch.ones(1, model.config.vocab_size, dtype=torch.bool)
    )
    layer = model.decoder.layers[3]
    contiguous = layer.cross_k
    try:  # same values, another layout
        layer.cross_k = contiguous.transpose(2, 3).contiguous().transpose(2, 3)
        assert not package.fits(model, token, position, None)
    finally:
        layer.cross_k = contiguous
    assert package.fits(model, token, position, None)


@pytest.mark.needs_weights
def test_encoder_package_serves_single_utterances(transcriber, beckett, monkeypatch):
    """One utterance runs the packaged encoder layers, with the eager layers' features (float32
    rounding apart); a padded batch (frame mask) runs them eagerly."""
    calls = []
    packaged_call = PackagedEncoder.__call__
    monkeypatch.setattr(
        PackagedEncoder, "__call__", lambda self, x: calls.append(1) or packaged_call(self, x)
    )
    model, layers = transcriber.model, transcriber._encoder_layers
    assert layers is not None
    with torch.inference_mode():
        audio = torch.from_numpy(beckett[: 3 * SAMPLE_RATE])[None]
        packaged, _ = model.encode(audio, layers=layers)
        assert len(calls) == 1
        eager, _ = model.encode(audio)
        assert packaged.shape == eager.shape
        assert (packaged - eager).abs().max().item() < 1e-4 * eager.abs().max().item()
        pair = torch.zeros(2, audio.shape[1])
        pair[0], pair[1, :SAMPLE_RATE] = audio[0], audio[0, :SAMPLE_RATE]
        _, mask = model.encode(pair, [audio.shape[1], SAMPLE_RATE], layers=layers)
    assert mask is not None and len(calls) == 1


# -- padded cross K/V and masks, eager on the float model ---------------------------------------


@pytest.mark.needs_weights
def test_padded_cross_kv_beckett(reference, beckett):
    """Cross K/V padded to 64-frame buckets (the CUDA-graph path) with a mask: same tokens."""
    padded = decode(reference, beckett, decode_step, pad_frames_to=64)
    assert padded.tokens == decode(reference, beckett, decode_step).tokens == BECKETT_TOKENS


@pytest.mark.needs_weights
@pytest.mark.needs_tts
def test_padded_cross_kv_command_clips(reference):
    clips = command_clips(max(PADDING_CLIPS) + 1)
    for index in PADDING_CLIPS:
        audio = load_audio(clips[index][1])
        plain = decode(reference, audio, decode_step)
        assert decode(reference, audio, decode_step, pad_frames_to=64).tokens == plain.tokens
        assert plain.tokens, clips[index]


@pytest.mark.needs_weights
@pytest.mark.slow
def test_cuda_graph_configuration_on_cpu(beckett):
    """The CUDA configuration (float16, `mode="reduce-overhead"`, frames padded to buckets behind
    a mask, outputs copied after each replay), run on the CPU where CUDA graphs do not apply:
    the eager float16 tokens, one graph for every length."""
    half = Transcriber(DecodeConfig(dtype="float16"), warm_up=False)
    assert half.model.decoder.norm.weight.dtype == torch.float16
    step = CompiledStep(torch.device("cpu"), graphs=True)
    assert step.pad_frames_to == 64 and step.artifact is None
    graphs = None
    for seconds in (2.0, 9.0, 3.1):
        audio = beckett[: round(seconds * SAMPLE_RATE)].astype(np.float16)
        eager = decode(half, audio, decode_step)
        assert decode(half, audio, step, pad_frames_to=step.pad_frames_to).tokens == eager.tokens
        assert eager.tokens
        if graphs is None:
            graphs = unique_graphs()  # after the first (the only) compile
    assert unique_graphs() == graphs, "a new length compiled a new graph"


@pytest.mark.needs_weights
def test_allowed_mask_in_decode_step(reference, beckett):
    """Teacher-forced along beckett: an all-True mask changes nothing, and a step only ever
    picks an allowed token, even when the unmasked choice is forbidden."""
    model = reference.model
    vocab = model.config.vocab_size
    expected = (*BECKETT_TOKENS, EOS_ID)
    with torch.inference_mode():
        features, frame_mask = model.encode(torch.from_numpy(beckett)[None])
        decode(reference, beckett, decode_step)  # sets up caches for batch 1
        model.prefill_cross(features, frame_mask)
        current = torch.tensor([[model.config.decoder_start_token_id]])
        for pos, target in enumerate(expected):
            input_pos = torch.tensor([pos])
            token, logprob = decode_step(model, current, input_pos)
            everything = torch.ones(1, vocab, dtype=torch.bool)
            all_token, all_logprob = decode_step(model, current, input_pos, everything)
            assert token.tolist() == all_token.tolist() == [target]
            assert torch.equal(logprob, all_logprob)

            few = torch.zeros(1, vocab, dtype=torch.bool)
            few[0, list(expected)] = True
            few_token, few_logprob = decode_step(model, current, input_pos, few)
            assert few_token.tolist() == [target]
            assert few_logprob.item() >= logprob.item()  # renormalized over fewer tokens

            few[0, target] = False
            other, _ = decode_step(model, current, input_pos, few)
            assert few[0, other.item()] and other.item() != target
            current = torch.tensor([[target]])


@pytest.mark.needs_weights
def test_logit_filter_constrains_greedy_decode(reference, beckett):
    vocab = reference.model.config.vocab_size
    fits = FixedMask((*BECKETT_TOKENS, EOS_ID), vocab)
    assert decode(reference, beckett, decode_step, logit_filter=fits).tokens == BECKETT_TOKENS

    narrow = FixedMask((BECKETT_TOKENS[0], 29889, EOS_ID), vocab)
    constrained = decode(reference, beckett, decode_step, logit_filter=narrow)
    assert set(constrained.tokens) <= set(narrow.allowed_ids)
    assert constrained.tokens[0] == BECKETT_TOKENS[0]


# -- start-up: inductor's CPU vector ISA probes --------------------------------------------------


def test_probe_library_loads_in_process(tmp_path):
    """The in-process probe accepts a loadable shared library and rejects anything else."""
    from moonshine_live.accel.inductor import _load_probe_library

    not_a_library = tmp_path / "probe.so"
    not_a_library.write_bytes(b"\x7fELF but not really")
    assert not _load_probe_library(None, str(not_a_library))
    assert not _load_probe_library(None, str(tmp_path / "missing.so"))
    libc10 = next(Path(torch.__file__).parent.joinpath("lib").glob("libc10.so*"))
    assert _load_probe_library(None, str(libc10))


@pytest.mark.slow
def test_in_process_probes_pick_the_same_vector_isa(tmp_path):
    """Our compiler set-up (probe libraries loaded in process, base ISA taken from the CPU flags)
    picks the vector ISA that inductor's own subprocess probes pick: the same kernels."""
    from moonshine_live.accel.inductor import use_compile_cache

    use_compile_cache()  # the ISA pick below must see our settings
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    ours = str(pick_vec_isa())
    code = "from torch._inductor.cpu_vec_isa import pick_vec_isa; print(str(pick_vec_isa()))"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    env.pop("TORCHINDUCTOR_VEC_ISA_OK", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == ours


@pytest.mark.needs_weights
def test_by_default_the_cached_packages_run_and_nothing_is_built(
    transcriber, beckett, tmp_path, monkeypatch
):
    """`DecodeConfig()` (the `transcribe` command, library use): the compiled packages a start
    before left in the cache run; with none there, the eager model, and nothing gets built
    (not even the JIT step for a batch)."""
    assert transcriber.compiled  # the session's engine-style transcriber filled the cache
    cached = Transcriber(DecodeConfig())
    assert cached.compiled and cached.compiled_from_cache, cached.path
    assert cached.path.startswith("compiled")
    assert cached.transcribe(beckett).tokens == BECKETT_TOKENS
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    pieces = [beckett[: 3 * SAMPLE_RATE], beckett[: 5 * SAMPLE_RATE]]
    batched = [t.tokens for t in cached.transcribe_batch(pieces)]
    assert batched == [cached.transcribe(piece).tokens for piece in pieces]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # eager, not JIT

    monkeypatch.setenv("MOONSHINE_LIVE_CACHE", str(tmp_path))
    empty = Transcriber(DecodeConfig())
    assert not empty.compiled and "no compiled packages in the cache" in empty.path
    assert empty.transcribe(beckett).tokens == BECKETT_TOKENS
    built = [p.name for p in (tmp_path / "compiled").glob("*") if p.suffix in (".pt2", ".so")]
    assert not built
