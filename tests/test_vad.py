"""VadConfig and Segmenter: exact events on synthetic frames, real webrtcvad on TTS speech."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from speech import command_clips, compose, composed_spans

from moonshine_live.capture.audio import SAMPLE_RATE, float32_to_int16, int16_to_float32, load_audio
from moonshine_live.errors import ConfigError
from moonshine_live.segment.vad import (
    Segmenter,
    SpeechDropped,
    SpeechStarted,
    Utterance,
    VadConfig,
    VadEvent,
)

N = 480  # samples per 30 ms frame
LEVELS = {".": 0, ",": 50, "+": 500, "#": 3000}
"""Synthetic frame kinds: "." silence, "," faint noise (unvoiced), "+" quiet and "#" loud speech."""
VOICED_LEVEL = 100
SYNTHETIC = VadConfig(
    pre_roll_ms=90,  # 3 frames
    post_roll_ms=60,  # 2 frames
    hangover_ms=300,  # 10 frames
    min_utterance_ms=150,
    max_utterance_ms=1500,  # 50 frames
    split_search_ms=300,  # 10 frames
)


def level_detector(frame: np.ndarray) -> bool:
    """Stand-in for webrtcvad: voiced when the frame is loud enough."""
    return int(np.abs(frame).max()) >= VOICED_LEVEL


def frames(pattern: str, start: int = 0) -> list[np.ndarray]:
    """One int16 frame per character of `pattern` (see LEVELS); spaces are ignored.

    Each frame is constant; speech frames add their index modulo 7, so a read back from the
    segmenter shows which frames an utterance holds (and their energies differ a little).
    """
    out = []
    for index, kind in enumerate(pattern.replace(" ", ""), start):
        level = LEVELS[kind]
        out.append(np.full(N, level + (index % 7 if level >= VOICED_LEVEL else 0), np.int16))
    return out


def feed(
    segmenter: Segmenter, pattern: str | list[np.ndarray], *, with_index: bool = False
) -> list[tuple[int, VadEvent]]:
    """Process frames; return (frame number, event) for every event."""
    chunks = frames(pattern) if isinstance(pattern, str) else pattern
    events = []
    for number, frame in enumerate(chunks):
        for event in segmenter.process(frame):
            events.append((number, event))
    return events


def make(config: VadConfig = SYNTHETIC, detector: Callable[[np.ndarray], bool] = level_detector):
    return Segmenter(config, is_speech=detector)


def summary(event: VadEvent) -> tuple:
    if isinstance(event, Utterance):
        return ("utterance", event.start_sample, event.end_sample, event.reason)
    return (type(event).__name__, *dataclasses.astuple(event))


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aggressiveness", 4),
        ("aggressiveness", -1),
        ("frame_ms", 25),
        ("start_frames", 0),
        ("start_frames", 6),  # more than start_window_frames
        ("start_window_frames", 0),
        ("hangover_ms", 20),  # shorter than a frame
        ("pre_roll_ms", -10),
        ("pre_roll_ms", 6000),  # more than half of max_utterance_ms
        ("post_roll_ms", 400),  # longer than hangover_ms
        ("min_utterance_ms", 10_000),
        ("max_utterance_ms", 500),
        ("max_utterance_ms", 60_000),
        ("split_search_ms", 6000),
    ],
)
def test_config_errors_name_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"VadConfig\.{field} must be in .*got {value}"):
        VadConfig(**{field: value})


def test_config_defaults_and_derived_values() -> None:
    config = VadConfig()
    assert config.frame_samples == 480
    assert config.post_roll_ms <= config.hangover_ms
    assert dataclasses.replace(config, frame_ms=10).frame_samples == 160
    assert config.frames(300) == 10 and config.frames(301) == 11 and config.frames(0) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hangover_ms = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------- synthetic


def test_start_needs_enough_voiced_frames_in_the_window() -> None:
    assert feed(make(), "....#.#..#.#...##...##...") == []  # never 3 of 5


def test_one_utterance_with_pre_and_post_roll() -> None:
    segmenter = make()
    events = feed(segmenter, "....." + "#####" + "." * 12)
    # Frames 5-9 voiced; start confirmed on frame 7; pre-roll 3 frames; end after 10 silent.
    assert [(n, summary(e)) for n, e in events] == [
        (7, ("SpeechStarted", 2 * N)),
        (19, ("utterance", 2 * N, 12 * N, "silence")),
    ]
    utterance = events[1][1]
    assert isinstance(utterance, Utterance)
    expected = np.concatenate(frames("....." + "#####" + "." * 12)[2:12])
    np.testing.assert_array_equal(utterance.audio, int16_to_float32(expected))
    assert utterance.audio.dtype == np.float32
    assert (utterance.start_s, utterance.end_s) == (2 * N / SAMPLE_RATE, 12 * N / SAMPLE_RATE)
    assert not segmenter.in_speech and segmenter.position == 22 * N


def test_speech_start_event_equality() -> None:
    events = feed(make(), "###")
    assert [e for _, e in events] == [SpeechStarted(0)]  # pre-roll clipped at the stream start


def test_short_pauses_and_lone_clicks_do_not_end_speech() -> None:
    pattern = "#####" + "." * 9 + "###" + "....#....#" + "##" + "." * 10
    events = feed(make(), pattern)
    assert [summary(e) for _, e in events] == [
        ("SpeechStarted", 0),
        ("utterance", 0, 31 * N, "silence"),  # the last run ends with frame 28, + post-roll
    ]
    assert events[-1][0] == 38  # 10 silent frames after it


def test_too_short_speech_is_dropped() -> None:
    # Voiced span of 4 frames = 120 ms < min_utterance_ms = 150.
    events = feed(make(), "...." + "####" + "." * 12)
    assert [summary(e) for _, e in events] == [
        ("SpeechStarted", 1 * N),
        ("SpeechDropped", 1 * N, 10 * N),
    ]
    assert events[1][1] == SpeechDropped(1 * N, 10 * N)


def test_utterances_never_overlap() -> None:
    config = dataclasses.replace(SYNTHETIC, pre_roll_ms=600)  # 20 frames
    events = feed(make(config), "######" + "." * 10 + "######" + "." * 10)
    utterances = [e for _, e in events if isinstance(e, Utterance)]
    assert [(u.start_sample, u.end_sample) for u in utterances] == [(0, 8 * N), (8 * N, 24 * N)]


def test_max_length_cuts_at_the_quietest_recent_frame() -> None:
    # 60 frames of speech with a quieter (still voiced) frame at 44: the cut lands in it.
    speech = "#" * 44 + "+" + "#" * 15
    events = feed(make(), speech + "." * 12)
    summaries = [summary(e) for _, e in events]
    cut = 44 * N + N // 2
    assert summaries == [
        ("SpeechStarted", 0),
        ("utterance", 0, cut, "max_length"),
        ("SpeechStarted", cut),
        ("utterance", cut, 62 * N, "silence"),
    ]
    assert events[1][0] == 49  # before the 50th frame could make it too long
    pieces = [e for _, e in events if isinstance(e, Utterance)]
    assert all(p.duration_s <= SYNTHETIC.max_utterance_ms / 1000 for p in pieces)


def test_max_length_prefers_unvoiced_frames_and_the_latest_of_equals() -> None:
    speech = "#" * 40 + "," + "#" * 2 + "," + "#" * 16  # faint unvoiced frames at 40 and 43
    events = feed(make(), speech)
    assert summary(events[1][1]) == ("utterance", 0, 43 * N + N // 2, "max_length")


def test_endless_speech_is_cut_into_bounded_pieces_and_memory_stays_fixed() -> None:
    segmenter = make()
    storage = segmenter.ring._data
    events = feed(segmenter, "#" * 2000)
    events += [(2000, e) for e in segmenter.force_end()]
    pieces = [e for _, e in events if isinstance(e, Utterance)]
    assert len(pieces) >= 2000 * 30 // 1500
    assert all(p.end_sample - p.start_sample <= 1500 * SAMPLE_RATE // 1000 for p in pieces)
    assert [p.start_sample for p in pieces[1:]] == [p.end_sample for p in pieces[:-1]]
    assert pieces[-1].reason == "end_of_stream" and pieces[-1].end_sample == 2000 * N
    assert segmenter.ring._data is storage


def test_force_end_closes_speech_in_progress() -> None:
    segmenter = make()
    assert segmenter.force_end() == []
    events = feed(segmenter, "..........######")
    assert [summary(e) for e in segmenter.force_end()] == [
        ("utterance", 7 * N, 16 * N, "end_of_stream")
    ]
    assert summary(events[0][1]) == ("SpeechStarted", 7 * N)
    assert segmenter.force_end() == [] and segmenter.position == 16 * N
    assert [summary(e) for _, e in feed(segmenter, "###")] == [("SpeechStarted", 16 * N)]


def test_reset_forgets_everything() -> None:
    segmenter = make()
    feed(segmenter, "......####")
    segmenter.reset()
    assert not segmenter.in_speech and segmenter.position == 0
    assert [summary(e) for _, e in feed(segmenter, "###")] == [("SpeechStarted", 0)]


def test_a_gap_ends_speech_and_moves_the_timeline() -> None:
    segmenter = make()
    feed(segmenter, "......######")
    events = segmenter.process(frames("#")[0], start_sample=100 * N)
    assert [summary(e) for e in events] == [("utterance", 3 * N, 12 * N, "gap")]
    assert segmenter.position == 101 * N
    assert [summary(e) for e in segmenter.process(frames("#")[0], 101 * N)] == []
    assert [summary(e) for e in segmenter.process(frames("#")[0])] == [
        ("SpeechStarted", 100 * N)  # not before the gap
    ]
    with pytest.raises(ValueError, match="before the segmenter's position"):
        segmenter.process(frames("#")[0], start_sample=5 * N)


@pytest.mark.parametrize("frame", [np.zeros(480, np.float32), np.zeros(320, np.int16)])
def test_wrong_frames_are_rejected(frame: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"int16 frames of shape \(480,\) \(30 ms"):
        make().process(frame)


@pytest.mark.parametrize("frame_ms", [10, 20])
def test_other_frame_lengths(frame_ms: int) -> None:
    config = dataclasses.replace(SYNTHETIC, frame_ms=frame_ms)
    n = config.frame_samples
    chunks = [np.full(n, 3000 if 20 <= i < 60 else 0, np.int16) for i in range(120)]
    events = feed(make(config), chunks)
    post_roll = SAMPLE_RATE * config.post_roll_ms // 1000
    pre_roll = SAMPLE_RATE * config.pre_roll_ms // 1000
    assert [summary(e) for _, e in events] == [
        ("SpeechStarted", 20 * n - pre_roll),
        ("utterance", 20 * n - pre_roll, 60 * n + post_roll, "silence"),
    ]


@settings(max_examples=100, deadline=None)
@given(
    runs=st.lists(st.tuples(st.sampled_from(".,+#"), st.integers(1, 80)), max_size=12),
    hangover_ms=st.sampled_from([60, 150, 300, 600]),
    pre_roll_ms=st.sampled_from([0, 45, 300]),
    post_roll_ms=st.sampled_from([0, 30, 60]),
    max_utterance_ms=st.sampled_from([1000, 2000]),
)
def test_segmenter_invariants(
    runs: list[tuple[str, int]],
    hangover_ms: int,
    pre_roll_ms: int,
    post_roll_ms: int,
    max_utterance_ms: int,
) -> None:
    """Any frame sequence: events alternate, utterances are ordered, disjoint, bounded, hold
    exactly the input samples, and every run of start_frames voiced frames is covered."""
    pattern = "".join(kind * count for kind, count in runs)
    config = VadConfig(
        hangover_ms=hangover_ms,
        pre_roll_ms=pre_roll_ms,
        post_roll_ms=post_roll_ms,
        max_utterance_ms=max_utterance_ms,
        split_search_ms=300,
    )
    segmenter = make(config)
    chunks = frames(pattern)
    events = [e for _, e in feed(segmenter, chunks)] + segmenter.force_end()
    assert not segmenter.in_speech
    assert_started_before_each_end(events)
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    utterances = [e for e in events if isinstance(e, Utterance)]
    for before, after in itertools.pairwise(utterances):
        assert before.end_sample <= after.start_sample
    max_samples = max_utterance_ms * SAMPLE_RATE // 1000
    for utterance in utterances:
        assert 0 < utterance.end_sample - utterance.start_sample <= max_samples
        expected = int16_to_float32(pcm[utterance.start_sample : utterance.end_sample])
        np.testing.assert_array_equal(utterance.audio, expected)
    covered = np.zeros(len(pcm), bool)  # by an utterance or a dropped stretch
    for event in events:
        if not isinstance(event, SpeechStarted):
            covered[event.start_sample : event.end_sample] = True
    voiced = [kind in "+#" for kind in pattern]
    for index in range(len(voiced) - config.start_frames + 1):
        if all(voiced[index : index + config.start_frames]):
            assert covered[index * N : (index + config.start_frames) * N].all(), index


def test_default_detector_is_webrtcvad() -> None:
    segmenter = Segmenter()  # webrtcvad imported here
    silence = np.zeros(480, np.int16)
    assert [segmenter.process(silence) for _ in range(20)] == [[]] * 20


# ---------------------------------------------------------------------------- real speech

SENTENCES = 24
GAP_S = 1.2
ONSET_SLACK_S = 0.15
"""How far into a clip's first audible sound an utterance may start: on soft onsets in noise
("pause", "close") webrtcvad fires up to about 280 ms late, 130 ms more than the pre-roll.
Moonshine transcribes those clips the same (measured against a 300 ms pre-roll)."""
END_SLACK_S = 0.02
"""How far the audible end of a clip may reach past its utterance (the faintest tail)."""
EXTRA_S = 0.25
"""Silence an utterance may carry beyond its pre- and post-roll: webrtcvad fires up to about
200 ms early on a breath-like onset in clean audio and hangs on about 100-200 ms after speech."""


def speech_extent(path) -> tuple[int, int]:
    """[start, end) of the audible part of a clip: 10 ms hops within 45 dB of its loudest."""
    audio = load_audio(path)
    hops = len(audio) // 160
    energy = np.mean(audio[: hops * 160].reshape(hops, 160) ** 2, axis=1) + 1e-12
    loud = np.flatnonzero(10 * np.log10(energy / energy.max()) > -45)
    return int(loud[0]) * 160, int(loud[-1] + 1) * 160


def segment(audio: np.ndarray, config: VadConfig | None = None) -> list[VadEvent]:
    segmenter = Segmenter(config)
    pcm = float32_to_int16(audio)
    n = segmenter.config.frame_samples
    events: list[VadEvent] = []
    for start in range(0, len(pcm) - n + 1, n):
        events += segmenter.process(pcm[start : start + n])
    return events + segmenter.force_end()


@pytest.mark.needs_tts
@pytest.mark.parametrize(("noise_db", "aggressiveness"), [(None, 2), (-50, 2), (-45, 3)])
def test_every_sentence_gives_one_utterance(noise_db: float | None, aggressiveness: int) -> None:
    clips = command_clips(SENTENCES)
    parts: list = [GAP_S]
    for _, path in clips:
        parts += [path, GAP_S]
    audio = compose(parts, noise_db=noise_db)
    config = VadConfig(aggressiveness=aggressiveness)
    events = segment(audio, config)
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert [e.reason for e in utterances] == ["silence"] * SENTENCES
    onset_slack, end_slack = ONSET_SLACK_S * SAMPLE_RATE, END_SLACK_S * SAMPLE_RATE
    extra = EXTRA_S * SAMPLE_RATE
    pre_roll = config.pre_roll_ms * SAMPLE_RATE // 1000
    post_roll = config.post_roll_ms * SAMPLE_RATE // 1000
    for (clip_start, _), (_, path), utterance in zip(
        composed_spans(parts), clips, utterances, strict=True
    ):
        first, last = speech_extent(path)
        speech_start, speech_end = clip_start + first, clip_start + last
        # The whole audible command is inside, and not much silence around it.
        assert speech_start - pre_roll - extra <= utterance.start_sample
        assert utterance.start_sample <= speech_start + onset_slack
        assert speech_end - end_slack <= utterance.end_sample <= speech_end + post_roll + extra
    assert_started_before_each_end(events)


def assert_started_before_each_end(events: list[VadEvent]) -> None:
    """Events alternate SpeechStarted -> Utterance | SpeechDropped with the same start."""
    started = None
    for event in events:
        if isinstance(event, SpeechStarted):
            assert started is None
            started = event.start_sample
        else:
            assert event.start_sample == started
            started = None


@pytest.mark.needs_tts
def test_long_speech_is_split_in_pauses() -> None:
    """Commands 150 ms apart (less than the hangover) are one stretch of speech: it is cut
    into pieces of at most max_utterance_ms, each cut in a pause between commands."""
    pause = np.zeros(int(0.15 * SAMPLE_RATE), np.float32)
    pieces, audible, position = [pause], [], len(pause)
    for _, path in command_clips(12):
        first, last = speech_extent(path)
        pieces += [load_audio(path)[first:last], pause]
        audible.append((position, position + last - first))
        position += last - first + len(pause)
    audio = np.concatenate(pieces)
    audio += np.random.default_rng(0).normal(0, 1e-3, len(audio)).astype(np.float32)
    config = VadConfig(max_utterance_ms=4000, split_search_ms=1500)
    events = segment(audio, config)
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= len(audio) // (4 * SAMPLE_RATE)
    assert {u.reason for u in utterances[:-1]} == {"max_length"}
    assert all(u.duration_s <= 4.0 for u in utterances)
    assert_started_before_each_end(events)
    for cut in (u.end_sample for u in utterances[:-1]):
        assert not any(a + 480 < cut < b - 480 for a, b in audible), cut / SAMPLE_RATE
    onset_slack, end_slack = ONSET_SLACK_S * SAMPLE_RATE, END_SLACK_S * SAMPLE_RATE
    for a, b in audible:  # nothing lost: each command lies inside one utterance
        assert any(
            u.start_sample <= a + onset_slack and b - end_slack <= u.end_sample for u in utterances
        )


def test_frames_below_the_level_floor_are_silence_whatever_the_detector_says() -> None:
    """webrtcvad judges spectra, not level: faint noise it calls voiced must not hold speech."""
    config = VadConfig(min_speech_dbfs=-55.0)
    segmenter = Segmenter(config, is_speech=lambda frame: True)  # a detector fooled by noise
    n = config.frame_samples
    rng = np.random.default_rng(0)
    faint = (rng.normal(0, 10, n * 40)).astype(np.int16)  # about -70 dBFS
    loud = (rng.normal(0, 3000, n * 20)).astype(np.int16)  # about -21 dBFS
    events = []
    for audio in (faint, loud, faint):
        for i in range(0, len(audio), n):
            events += segmenter.process(audio[i : i + n])
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "Utterance"], kinds
    utterance = events[1]
    # speech is the loud stretch only: it starts in the first faint part's pre-roll...
    assert utterance.start_sample >= 40 * n - config.pre_roll_ms * 16
    # ...and ends by hangover after it, not at the end of the faint noise
    assert utterance.end_sample <= 60 * n + config.post_roll_ms * 16 + n
    with pytest.raises(ConfigError, match="min_speech_dbfs"):
        VadConfig(min_speech_dbfs=0.0)


# ---------------------------------------------------------------------------- pauses, a shared ring


def test_a_pause_is_reported_once_per_pause_inside_the_hangover() -> None:
    """`pause_ms` of silence in an utterance: one `Pause` (the audio so far and where speech
    ended); speech resuming and pausing again gives another; without pause_ms, none."""
    pausing = Segmenter(SYNTHETIC, is_speech=level_detector, pause_ms=150)  # 5 frames
    pattern = "..." + "#" * 10 + "." * 6 + "#" * 5 + "." * 12
    events = [(n, e) for n, e in feed(pausing, pattern) if not isinstance(e, SpeechStarted)]
    pauses = [(n, summary(e)) for n, e in events if type(e).__name__ == "Pause"]
    assert pauses == [
        (17, ("Pause", 0, 13 * N, 18 * N)),
        (28, ("Pause", 0, 24 * N, 29 * N)),
    ]
    (last, utterance) = events[-1]
    assert isinstance(utterance, Utterance) and last > 28  # the hangover still ends it
    assert not [e for _, e in feed(make(), pattern) if type(e).__name__ == "Pause"]


def test_a_segmenter_reading_the_sources_ring_cuts_what_a_copying_one_cuts() -> None:
    """One ring: the frames are already in the source's ring, the segmenter only reads them,
    and the utterances (times and audio) are those of a segmenter that copies every frame."""
    from moonshine_live.capture.ringbuffer import RingBuffer

    pattern = ".." + "#" * 20 + "." * 14 + "+" * 8 + "." * 14
    ring = RingBuffer(4 * SAMPLE_RATE)
    reader = Segmenter(SYNTHETIC, is_speech=level_detector, history=ring)
    copier = make()
    shared, copied = [], []
    for index, frame in enumerate(frames(pattern)):
        ring.write(frame)
        shared += reader.process(frame, index * N)
        copied += copier.process(frame, index * N)
    assert [summary(e) for e in shared] == [summary(e) for e in copied]
    utterances = [(a, b) for a, b in zip(shared, copied, strict=True) if isinstance(a, Utterance)]
    assert len(utterances) == 2
    for a, b in utterances:
        np.testing.assert_array_equal(a.audio, b.audio)
    assert reader.history is ring and ring.total_written == len(pattern) * N


def test_a_ring_too_small_for_an_utterance_is_refused() -> None:
    from moonshine_live.capture.ringbuffer import RingBuffer

    with pytest.raises(ConfigError, match="max_utterance_ms"):
        Segmenter(SYNTHETIC, is_speech=level_detector, history=RingBuffer(SAMPLE_RATE))


# -- speech in a whole file: the same segmenter, plus the file policy -----------------------------


@pytest.mark.needs_tts
def test_speech_spans_join_short_gaps_and_skip_long_silence() -> None:
    """Files are cut by the live segmenter: 300 ms kept around speech, a 0.5 s pause joined
    (one sentence decodes as one piece), 8 s of silence splitting."""
    from moonshine_live.segment.spans import speech_spans

    clips = [path for _, path in command_clips(3)]
    parts = [5.0, clips[0], 0.5, clips[1], 8.0, clips[2], 2.0]
    audio = compose(parts, noise_db=-70.0)
    spoken = composed_spans(parts)
    spans = speech_spans(audio)
    assert len(spans) == 2, spans
    (a0, b0), (a1, b1) = spans
    voiced = [_voiced_span(audio, s, e) for s, e in spoken]
    assert voiced[0][0] - 0.33 * SAMPLE_RATE <= a0 <= voiced[0][0] - 0.2 * SAMPLE_RATE
    assert voiced[1][1] + 0.2 * SAMPLE_RATE <= b0 <= voiced[1][1] + 0.45 * SAMPLE_RATE
    assert a1 < voiced[2][0] and voiced[2][1] < b1 <= voiced[2][1] + 0.45 * SAMPLE_RATE


def _voiced_span(audio: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """First and last sample of a clip's 10 ms hops within 40 dB of its loudest."""
    hops = (end - start) // 160
    energy = np.mean(audio[start : start + hops * 160].reshape(hops, 160) ** 2, axis=1) + 1e-12
    loud = np.flatnonzero(10 * np.log10(energy / energy.max()) > -40)
    return start + int(loud[0]) * 160, start + int(loud[-1] + 1) * 160


def test_speech_spans_of_silence_and_clicks_are_empty() -> None:
    from moonshine_live.segment.spans import speech_spans

    assert speech_spans(np.zeros(SAMPLE_RATE * 10, dtype=np.float32)) == []
    assert speech_spans(np.zeros(100, dtype=np.float32)) == []
    click = np.zeros(SAMPLE_RATE * 3, dtype=np.float32)
    click[SAMPLE_RATE : SAMPLE_RATE + 480] = 0.5  # one 30 ms click is not speech
    assert speech_spans(click) == []
