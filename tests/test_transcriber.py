"""`Transcriber` on the real default model: parity with transformers, batching, bad input, files.

The reference is `transformers.MoonshineForConditionalGeneration` loaded from the same converted
checkpoint (shared/notes/weights.md). One warm `Transcriber` and one reference model serve the
whole module. Run with `-rP` to see the transcripts of the TTS clips next to the reference ones.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_module
from hypothesis import given
from hypothesis import strategies as st
from speech import command_clips, compose, composed_spans, tts_wav

from moonshine_live.asr.transcriber import FileTranscript, Transcriber
from moonshine_live.asr.transcript import Transcript
from moonshine_live.capture.audio import SAMPLE_RATE, load_audio, write_wav
from moonshine_live.errors import AudioFormatError
from moonshine_live.model.decoding import RepetitionGuard, token_budget

pytestmark = pytest.mark.needs_weights

BECKETT_IDS = (1, 18274, 1898, 3926, 5229, 29892, 694, 4383, 1018, 1449, 4418, 1449, 4418, 2253)
BECKETT_IDS += (29889, 2)
"""Greedy fp32 ids for beckett.wav with start and end tokens (weights.md)."""
BECKETT_TEXT = "Ever tried ever failed, no matter try again fail again fail better."
START_ID, EOS_ID = 1, 2
ENCODER_TOLERANCE = 5e-4
"""Max abs encoder difference to transformers (values reach about 7)."""
LOGITS_TOLERANCE = 1e-4
"""Max abs logit difference to transformers at any decode step."""
CLIP_COUNT = 24
REFERENCE_CLIPS = (0, 5, 8, 13)
"""Clips compared layer-for-layer with transformers: espeak and flite voices, 1-2.2 s."""
BATCH_CLIPS = (8, 4, 17)
"""With beckett: 10 s, 2.2 s, 1.2 s and 0.9 s, so three rows of the batch are padded."""

LONG_FILE_S = 600.0
LONG_FILE_NOISE_DB = -80.0
LONG_FILE_TIME_LIMIT_S = 300
LONG_SENTENCES = (
    ("the weather today is sunny and warm", ("weather", "sunny")),
    ("please call my sister tomorrow morning", ("sister", "morning")),
    ("the train leaves from platform seven", ("train", "platform")),
    ("remember to buy bread and coffee", ("bread", "coffee")),
    ("the meeting has moved to friday afternoon", ("meeting", "friday")),
)
"""Sentences of the 10-minute file, each with key words that must come out in order."""


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def beckett(beckett_path: Path) -> np.ndarray:
    return load_audio(beckett_path)


@pytest.fixture(scope="session")
def clips() -> list[tuple[str, np.ndarray]]:
    """(phrase, audio) for the 24 command clips, espeak-ng and flite voices alternating."""
    return [(phrase, load_audio(path)) for phrase, path in command_clips(CLIP_COUNT)]


@pytest.fixture(scope="session")
def hf_model(transcriber: Transcriber):
    require_module("transformers")
    import transformers

    from moonshine_live.checkpoint.weights import read_state_dict

    directory = transcriber.checkpoint.directory
    model = transformers.MoonshineForConditionalGeneration(
        transformers.MoonshineConfig.from_pretrained(directory)
    )
    model.load_state_dict(read_state_dict(transcriber.checkpoint.weights_path), strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def hf_generate(hf_model, transcriber: Transcriber) -> Callable[[np.ndarray], tuple[int, ...]]:
    """Reference greedy ids (start token included) with our budget; cached per audio."""

    @functools.cache
    def generate(audio_bytes: bytes) -> tuple[int, ...]:
        audio = np.frombuffer(audio_bytes, dtype=np.float32)
        with torch.inference_mode():
            ids = hf_model.generate(
                torch.from_numpy(audio.copy())[None],
                max_new_tokens=transcriber.budget(len(audio)),
                do_sample=False,
            )
        return tuple(ids[0].tolist())

    return lambda audio: generate(np.ascontiguousarray(audio, dtype=np.float32).tobytes())


def content_ids(reference_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Reference ids without the start token and a final end-of-text, like `Transcript.tokens`."""
    assert reference_ids[0] == START_ID, reference_ids
    return reference_ids[1:-1] if reference_ids[-1] == EOS_ID else reference_ids[1:]


def reference_audio(name: str, beckett: np.ndarray, request: pytest.FixtureRequest) -> np.ndarray:
    """beckett, or command clip N for "clipN" (the TTS fixture is only built when needed)."""
    if name == "beckett":
        return beckett
    return request.getfixturevalue("clips")[int(name.removeprefix("clip"))][1]


REFERENCE_NAMES = [
    "beckett",
    *(pytest.param(f"clip{i}", marks=pytest.mark.needs_tts) for i in REFERENCE_CLIPS),
]


# -- parity with transformers ----------------------------------------------------------------------


@pytest.mark.needs_reference
@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_encoder_matches_transformers(name, transcriber, hf_model, beckett, request) -> None:
    audio = torch.from_numpy(reference_audio(name, beckett, request))[None]
    with torch.inference_mode():
        ours, frame_mask = transcriber.model.encode(audio)
        theirs = hf_model.model.encoder(audio).last_hidden_state
    assert frame_mask is None
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    print(f"{name}: encoder max abs diff {diff:.3g}")
    assert diff <= ENCODER_TOLERANCE


@pytest.mark.needs_reference
@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_decoder_logits_match_transformers_at_every_step(
    name, transcriber, hf_model, hf_generate, beckett, request
) -> None:
    """Teacher-forced along the reference greedy path, both sides with their KV caches."""
    audio = reference_audio(name, beckett, request)
    path = hf_generate(audio)
    model, x = transcriber.model, torch.from_numpy(audio)[None]
    diffs = []
    with torch.inference_mode():
        features, frame_mask = model.encode(x)
        model.setup_caches(1, model.config.max_position_embeddings)
        model.prefill_cross(features, frame_mask)
        encoded, past = hf_model.model.encoder(x), None
        for pos, token in enumerate(path[:-1]):
            step_ids = torch.tensor([[token]])
            ours = model.decode_step(step_ids, torch.tensor([pos]))[:, -1]
            out = hf_model(
                encoder_outputs=encoded, decoder_input_ids=step_ids,
                past_key_values=past, use_cache=True,
            )  # fmt: skip
            past = out.past_key_values
            diffs.append((ours - out.logits[:, -1]).abs().max().item())
    print(f"{name}: {len(diffs)} steps, logits max abs diff {max(diffs):.3g}")
    assert len(diffs) == len(path) - 1 >= 2
    assert max(diffs) <= LOGITS_TOLERANCE, [f"{d:.2g}" for d in diffs]


@pytest.mark.needs_reference
def test_beckett_matches_reference_generate(transcriber, hf_generate, beckett) -> None:
    assert hf_generate(beckett) == BECKETT_IDS


def test_beckett_ids_and_text(transcriber: Transcriber, beckett: np.ndarray) -> None:
    result = transcriber.transcribe(beckett)
    assert result.tokens == BECKETT_IDS[1:-1]
    assert result.text == BECKETT_TEXT
    assert result.stop_reason == "eos"
    assert result.audio_s == pytest.approx(len(beckett) / SAMPLE_RATE)
    assert math.isfinite(result.avg_logprob) and result.avg_logprob < 0


class ForcedTokens:
    """A `LogitFilter` that allows exactly one token sequence, then end-of-text."""

    def __init__(self, ids: list[int], vocab_size: int, eos_id: int) -> None:
        self.table = torch.zeros(len(ids) + 1, vocab_size, dtype=torch.bool)
        for position, token in enumerate([*ids, eos_id]):
            self.table[position, token] = True

    def initial_state(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch_size, dtype=torch.long, device=device)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        return self.table[state.clamp(max=len(self.table) - 1)]

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return state + 1


def test_a_constraint_applies_to_its_utterance_only(beckett: np.ndarray) -> None:
    """`constraint` is per utterance: the same transcriber decodes what it allows for one call
    and freely for the next (how pipelines with different grammars share one model)."""
    from moonshine_live.asr.config import DecodeConfig

    shared = Transcriber(DecodeConfig(compile=False), warm_up=False)
    ids = shared.tokenizer.encode("open firefox")
    forced = ForcedTokens(ids, shared.model.config.vocab_size, shared.tokenizer.eos_id)
    constrained = shared.transcribe(beckett, constraint=forced)
    assert constrained.tokens == tuple(ids) and constrained.text == "open firefox"
    assert constrained.stop_reason == "eos"
    assert shared.transcribe(beckett).text == BECKETT_TEXT


@pytest.mark.needs_reference
@pytest.mark.needs_tts
@pytest.mark.parametrize("index", range(CLIP_COUNT))
def test_command_clip_ids_match_transformers_generate(
    index, transcriber, hf_generate, clips
) -> None:
    phrase, audio = clips[index]
    result = transcriber.transcribe(audio)
    expected = content_ids(hf_generate(audio))
    reference_text = transcriber.tokenizer.decode(expected).strip()
    summary = (
        f"clip {index} ({'espeak' if index % 2 == 0 else 'flite'}) {phrase!r}: "
        f"ours {result.text!r} ({result.stop_reason}), transformers {reference_text!r}"
    )
    print(summary)
    if result.stop_reason == "repetition":  # our guard may stop a loop transformers runs on
        assert expected[: len(result.tokens)] == result.tokens, summary
    else:
        assert result.tokens == expected, summary
    assert result.text == reference_text, summary


# -- batching and input handling -------------------------------------------------------------------


@pytest.mark.needs_tts
def test_batch_equals_one_at_a_time(transcriber, beckett, clips) -> None:
    utterances = [beckett, *(clips[i][1] for i in BATCH_CLIPS)]
    assert len({len(u) for u in utterances}) == len(utterances)
    single = [transcriber.transcribe(u) for u in utterances]
    batched = transcriber.transcribe_batch(utterances, [1.0, 2.0, 3.0, 4.0])
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.audio_s for b in batched] == [s.audio_s for s in single]
    assert [b.t_start for b in batched] == [1.0, 2.0, 3.0, 4.0]
    reversed_batch = transcriber.transcribe_batch(utterances[::-1])
    assert [b.tokens for b in reversed_batch[::-1]] == [s.tokens for s in single]


FROZEN_CHECK = """
import gc
from moonshine_live.asr.config import DecodeConfig
from moonshine_live.asr.transcriber import Transcriber

transcriber = Transcriber(DecodeConfig(compile=True))
model = transcriber.model
start_objects = [transcriber, transcriber.tokenizer, model, *model.modules()]
tracked = {id(o) for o in gc.get_objects()}  # the collected generations; frozen ones are not
print(gc.get_freeze_count(), len(gc.get_objects()), sum(id(o) in tracked for o in start_objects))
"""


def test_warm_up_exempts_the_start_objects_from_full_collections(transcriber) -> None:
    """What loading and compiling leave behind is frozen once warm: a full collection (and the
    one at exit) no longer walks it, so none stalls the live engine. In a fresh process: in this
    one, other tests make objects (and new KV caches) after the freeze."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FROZEN_CHECK], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    frozen, collected, start_objects_collected = map(int, result.stdout.split())
    assert frozen > 50_000  # the model, tokenizer and compiled steps' objects
    assert collected < frozen / 4
    assert start_objects_collected == 0


def test_empty_batch(transcriber: Transcriber) -> None:
    assert transcriber.transcribe_batch([]) == []


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((0, 1), dtype=np.float32), "empty"),
        (np.r_[np.zeros(8000), np.nan, np.zeros(8000)].astype(np.float32), "NaN"),
        (np.r_[np.zeros(8000), np.inf].astype(np.float32), "infinite"),
        (np.zeros((16000, 64), dtype=np.float32), "channels"),
        (np.zeros((2, 8000, 2), dtype=np.float32), "shape"),
        (np.zeros(16000, dtype=np.int32), "dtype"),
        (np.full(16000, 1000.0, dtype=np.float32), "int16"),
    ],
    ids=["empty", "empty-2d", "nan", "inf", "64-channels", "3d", "int32", "unscaled"],
)
def test_transcribe_rejects_bad_audio(transcriber, audio, message) -> None:
    with pytest.raises(AudioFormatError, match=message):
        transcriber.transcribe(audio)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(0, dtype=np.float32),
        np.r_[np.zeros(8000), np.nan, np.zeros(8000)].astype(np.float32),
        np.zeros((16000, 64), dtype=np.float32),
        np.full(16000, 1000, dtype=np.int32),
    ],
    ids=["empty", "nan", "64-channels", "int32"],
)
def test_transcribe_batch_rejects_bad_audio(transcriber, audio) -> None:
    """The batch entry point is public too; it must not turn bad input into made-up tokens."""
    with pytest.raises(AudioFormatError):
        transcriber.transcribe_batch([audio])


def assert_sane(result: Transcript, audio_s: float) -> None:
    assert isinstance(result, Transcript)
    assert result.audio_s == pytest.approx(audio_s)
    assert all(math.isfinite(v) for v in (result.avg_logprob, result.encode_ms, result.decode_ms))
    assert result.encode_ms >= 0 and result.decode_ms >= 0
    assert result.stop_reason in ("eos", "budget", "repetition")


@pytest.mark.parametrize("samples", [1, 800, 894, 895])
def test_clips_shorter_than_the_stem_still_transcribe(transcriber, beckett, samples) -> None:
    """0.05 s (800 samples) is below the conv stem's minimum of 895; the input is padded."""
    result = transcriber.transcribe(beckett[SAMPLE_RATE : SAMPLE_RATE + samples])
    assert_sane(result, samples / SAMPLE_RATE)
    assert len(result.tokens) <= transcriber.budget(samples)


def test_int16_stereo_gives_the_same_tokens_as_float_mono(transcriber, beckett) -> None:
    """beckett.wav is 16-bit, so int16 -> float32 is exact and both channels average to it."""
    mono = beckett[: 4 * SAMPLE_RATE]
    pcm = np.rint(mono * 32768).astype(np.int16)
    expected = transcriber.transcribe(mono).tokens
    assert expected
    assert transcriber.transcribe(pcm).tokens == expected
    assert transcriber.transcribe(np.stack([pcm, pcm], axis=1)).tokens == expected


# -- files -----------------------------------------------------------------------------------------


def test_transcribe_file_beckett(transcriber: Transcriber, beckett_path: Path) -> None:
    result = transcriber.transcribe_file(beckett_path)
    assert isinstance(result, FileTranscript)
    assert result.path == str(beckett_path)
    assert result.text == BECKETT_TEXT
    assert result.tokens == BECKETT_IDS[1:-1]
    assert len(result.pieces) == 1


@pytest.mark.parametrize("seconds", [3.0, 45.0])
def test_digital_silence_file_is_empty_text(transcriber, tmp_path, seconds) -> None:
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32))
    result = transcriber.transcribe_file(path)
    assert result.text == "" and result.tokens == () and result.pieces == ()
    assert result.audio_s == pytest.approx(seconds)


def test_missing_file_is_named(transcriber: Transcriber, tmp_path: Path) -> None:
    path = tmp_path / "no-such-recording.wav"
    with pytest.raises(AudioFormatError, match=re.escape(str(path))):
        transcriber.transcribe_file(path)


@pytest.mark.parametrize(
    "content", [b"RIFF\x24\x00\x00\x00WAVEfmt garbage", b"not audio at all\n" * 50, b""]
)
def test_corrupt_file_is_named(transcriber, tmp_path, content) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFormatError, match=re.escape(str(path))):
        transcriber.transcribe_file(path)


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the body runs longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    """A 10-minute WAV: five short sentences between long stretches of -80 dBFS white noise."""
    sentences = [tts_wav(text, "espeak", variant="en-us") for text, _ in LONG_SENTENCES]
    speech_s = sum(len(load_audio(path)) for path in sentences) / SAMPLE_RATE
    gap = (LONG_FILE_S - speech_s) / (len(sentences) + 1)
    parts: list[Path | float] = []
    for path in sentences:
        parts += [gap, path]
    parts.append(gap)
    audio = compose(parts, noise_db=LONG_FILE_NOISE_DB, noise_color="white")
    path = tmp_path_factory.mktemp("long") / "ten-minutes.wav"
    write_wav(path, audio)
    return path, composed_spans(parts)


@pytest.fixture(scope="module")
def long_transcript(transcriber, long_recording) -> tuple[FileTranscript, float]:
    started = time.perf_counter()
    with time_limit(LONG_FILE_TIME_LIMIT_S):
        result = transcriber.transcribe_file(long_recording[0])
    return result, time.perf_counter() - started


@pytest.mark.needs_tts
@pytest.mark.slow
def test_long_file_pieces_are_ordered_bounded_and_cover_the_speech(
    transcriber, long_recording, long_transcript
) -> None:
    path, spans = long_recording
    result, elapsed = long_transcript
    assert elapsed < LONG_FILE_TIME_LIMIT_S
    assert result.path == str(path)
    assert result.audio_s == pytest.approx(LONG_FILE_S, abs=0.01)
    bounds = [(p.t_start, p.t_end) for p in result.pieces]
    assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(bounds)), bounds
    assert max(p.audio_s for p in result.pieces) <= transcriber.config.max_chunk_s
    for start, end in spans:  # every sentence lies inside one piece, with some silence around
        inside = [(a, b) for a, b in bounds if a <= start / SAMPLE_RATE and end / SAMPLE_RATE <= b]
        assert inside, f"speech {start / SAMPLE_RATE:.2f}-{end / SAMPLE_RATE:.2f} s not in a piece"


@pytest.mark.needs_tts
@pytest.mark.slow
def test_long_file_text_has_every_sentence_in_order(long_recording, long_transcript) -> None:
    result, _ = long_transcript
    text = result.text.lower()
    pieces = "\n".join(
        f"  {p.t_start:7.2f}-{p.t_end:7.2f} s {p.stop_reason:>10} {p.text!r}" for p in result.pieces
    )
    spans = [f"{s / SAMPLE_RATE:.1f}-{e / SAMPLE_RATE:.1f} s" for s, e in long_recording[1]]
    position = 0
    for (sentence, words), span in zip(LONG_SENTENCES, spans, strict=True):
        for word in words:
            found = text.find(word, position)
            assert found >= 0, f"{word!r} of {sentence!r} at {span} missing; pieces:\n{pieces}"
            position = found + len(word)


# -- decoding rules without the model -------------------------------------------------------------

GUARD = RepetitionGuard()  # defaults: n-grams up to 4, 6 single repeats, 4 phrase repeats
FAIL, AGAIN, BETTER = 4418, 1449, 2253


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([], None),
        ([7], None),
        (list(BECKETT_IDS[1:-1]), None),  # "... fail again fail again fail better."
        ([FAIL, AGAIN, FAIL, AGAIN], None),  # a phrase said twice is speech, not a loop
        ([FAIL, AGAIN] * 3, None),
        ([FAIL, AGAIN] * 4, 2),
        ([5, 6, *[FAIL, AGAIN] * 4], 4),
        ([5, *[7] * 5], None),
        ([5, *[7] * 6], 2),
        ([*[7] * 6, 8], None),  # the loop must be at the end
        ([5, *[1, 2, 3] * 3], None),
        ([5, *[1, 2, 3] * 4], 4),
        ([*[1, 2, 3, 4] * 3], None),
        ([*[1, 2, 3, 4] * 4], 4),
        ([*[1, 2, 3, 4, 5] * 6], None),  # longer than max_ngram
        ([7, 7, 8, 7, 7, 8, 7, 7, 8, 7, 7, 8], 3),
    ],
)
def test_repetition_guard_loop_start(tokens, expected) -> None:
    assert GUARD.loop_start(tokens) == expected


def test_repetition_guard_limits_are_configurable() -> None:
    strict = RepetitionGuard(max_single_repeats=3, max_phrase_repeats=2)
    assert strict.loop_start([5, 7, 7]) is None
    assert strict.loop_start([5, 7, 7, 7]) == 2
    assert strict.loop_start([FAIL, AGAIN, FAIL, AGAIN]) == 2
    assert RepetitionGuard(max_ngram=2).loop_start([1, 2, 3] * 4) is None


@given(
    prefix=st.lists(st.integers(100, 199), max_size=6, unique=True),
    phrase=st.lists(st.integers(200, 299), min_size=1, max_size=4, unique=True),
)
def test_repetition_guard_keeps_the_first_copy(prefix, phrase) -> None:
    """prefix + phrase x limit is cut right after the first copy; one copy fewer is kept whole."""
    limit = GUARD.max_single_repeats if len(phrase) == 1 else GUARD.max_phrase_repeats
    looping = prefix + phrase * limit
    assert GUARD.loop_start(looping) == len(prefix) + len(phrase)
    assert GUARD.loop_start(prefix + phrase * (limit - 1)) is None


@pytest.mark.parametrize(
    ("samples", "rate", "per_s", "floor", "expected"),
    [
        (159414, 16000, 6.5, 6, 64),  # beckett: int(6.5 * 9.963 s) as in weights.md
        (160000, 16000, 6.5, 6, 65),
        (16000, 16000, 6.5, 6, 6),  # the floor wins for short commands
        (32000, 16000, 6.5, 6, 13),
        (32000, 16000, 3.0, 6, 6),
        (0, 16000, 6.5, 6, 6),
        (0, 16000, 6.5, 0, 1),  # never zero
        (960000, 16000, 6.5, 6, 193),  # capped by the decoder's 194 positions (start token)
        (960000, 16000, 6.5, 500, 193),
        (80000, 8000, 6.5, 6, 65),  # seconds are counted at the given rate
    ],
)
def test_token_budget(samples, rate, per_s, floor, expected) -> None:
    assert token_budget(samples, rate, per_s, floor, 194) == expected


@given(
    samples=st.integers(0, 16000 * 120),
    extra=st.integers(0, 16000 * 10),
    per_s=st.floats(0.5, 50),
    floor=st.integers(1, 190),
)
def test_token_budget_is_monotonic_and_in_range(samples, extra, per_s, floor) -> None:
    budget = token_budget(samples, SAMPLE_RATE, per_s, floor, 194)
    assert 1 <= budget <= 193
    assert budget >= min(floor, 193)
    assert token_budget(samples + extra, SAMPLE_RATE, per_s, floor, 194) >= budget


def test_transcriber_budget_uses_config(transcriber: Transcriber) -> None:
    config = transcriber.config
    assert transcriber.budget(0) == config.min_new_tokens
    assert transcriber.budget(159414) == 64
    assert transcriber.budget(16000 * 600) == transcriber.model.config.max_position_embeddings - 1


def test_every_caller_runs_on_the_one_compute_thread(transcriber, beckett) -> None:
    """The model runs on one thread whoever calls (the loop, an executor, another pipeline),
    a second OpenMP team halves the speed of a 2-core machine (see `on_compute_thread`)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ran_on: set[int] = set()
    encode = transcriber.model.encode

    def recorded(*args, **kwargs):
        ran_on.add(threading.get_ident())
        return encode(*args, **kwargs)

    transcriber.model.encode = recorded
    try:
        here = transcriber.transcribe(beckett[:SAMPLE_RATE])
        with ThreadPoolExecutor(2) as pool:
            there = list(pool.map(transcriber.transcribe, [beckett[:SAMPLE_RATE]] * 2))
    finally:
        del transcriber.model.encode
    assert len(ran_on) == 1 and threading.get_ident() not in ran_on
    assert all(t.tokens == here.tokens for t in there)
    # the same thread for every transcriber in the process, and for other torch work
    from moonshine_live.asr.transcriber import on_compute_thread

    assert on_compute_thread(threading.get_ident) in ran_on
