"""The whole live pipeline on real speech: file source -> VAD -> warm Moonshine -> events."""

from __future__ import annotations

import asyncio
import gc
import itertools
import resource
from pathlib import Path

import numpy as np
import pytest
from conftest import engine_events
from speech import compose, composed_spans, tts_wav

from moonshine_live.capture.audio import SAMPLE_RATE
from moonshine_live.capture.sources import ArraySource
from moonshine_live.engine.engine import Engine, EngineConfig
from moonshine_live.events import Event
from moonshine_live.segment.vad import VadConfig

pytestmark = [pytest.mark.needs_weights, pytest.mark.needs_tts]

TIMEOUT = 120.0  # seconds for a whole short run; every await on the engine is bounded
# Phrases Moonshine base gets right from these voices (checked in test_transcriber's table).
SENTENCES = [
    ("turn on the kitchen lights", "espeak", "en-us", "kitchen"),
    ("open the terminal", "espeak", "en-us", "terminal"),
    ("close the window", "flite", "slt", "window"),
    ("maximize the window", "flite", "rms", "maximize"),
    ("switch to workspace three", "flite", "rms", "workspace"),
    ("scroll down", "flite", "slt", "scroll"),
]


@pytest.fixture(scope="module")
def clips() -> list[Path]:
    return [tts_wav(text, engine, variant=voice) for text, engine, voice, _ in SENTENCES]


async def run_engine(
    audio: np.ndarray, transcriber, config: EngineConfig | None = None, realtime: bool = False
) -> list[Event]:
    """All events of one run over `audio`, in order."""
    config = config or EngineConfig(stats_interval_s=0)
    engine = Engine(config, source=ArraySource(audio, realtime=realtime), transcriber=transcriber)
    return await engine_events(engine, TIMEOUT)


def of_type(events: list[Event], kind: str) -> list:
    return [e for e in events if e.type == kind]


async def test_every_sentence_is_one_transcript_in_order_with_times(transcriber, clips) -> None:
    parts: list[Path | float] = [1.2]
    for clip in clips:
        parts += [clip, 1.5]
    audio = compose(parts, noise_db=-50)
    spans = composed_spans(parts)
    events = await run_engine(audio, transcriber)
    assert events[0].type == "ready" and events[-1].type == "stopped"
    transcripts = of_type(events, "transcript")
    texts = [t.text for t in transcripts]
    assert len(transcripts) == len(SENTENCES), texts
    for (text, _, _, key), (start, end), event in zip(SENTENCES, spans, transcripts, strict=True):
        assert key in event.text.lower(), (text, event.text)
        # the utterance holds the sentence, with at most ~0.5 s of silence on either side;
        # clips open with a little TTS silence and webrtcvad hears soft onsets ("close",
        # "scroll") up to ~0.3 s late in noise; the 150 ms pre-roll covers part of that
        assert start / SAMPLE_RATE - 0.5 <= event.t_start <= start / SAMPLE_RATE + 0.35, event
        assert end / SAMPLE_RATE - 0.1 <= event.t_end <= end / SAMPLE_RATE + 0.5, event
        assert event.latency_ms > 0
    assert len(of_type(events, "speech_start")) >= len(SENTENCES)
    assert not of_type(events, "error") and not of_type(events, "dropped")


async def test_realtime_run_gives_partials_and_low_latency(transcriber, clips) -> None:
    audio = compose([0.5, clips[0], 1.0], noise_db=-50)
    config = EngineConfig(stats_interval_s=0.5, partial_interval_ms=300)
    events = await run_engine(audio, transcriber, config, realtime=True)
    (final,) = of_type(events, "transcript")
    assert "kitchen" in final.text.lower()
    partials = of_type(events, "partial")
    assert partials, "a 1.6 s sentence read in real time gets at least one partial"
    assert all(p.t_start == final.t_start and p.t_end < final.t_end for p in partials)
    # end of speech -> text: the VAD hangover (300 ms) plus one decode; generous for loaded CI
    assert final.latency_ms < 5000
    stats = of_type(events, "stats")
    assert stats and stats[-1].audio_s > 1.0


async def test_a_raising_callback_is_reported_and_the_engine_goes_on(transcriber, clips) -> None:
    audio = compose([0.5, clips[1], 1.0, clips[2], 1.0], noise_db=-50)
    seen: list[str] = []
    engine = Engine(
        EngineConfig(stats_interval_s=0), source=ArraySource(audio), transcriber=transcriber
    )

    @engine.on("transcript")
    def explode(event) -> None:
        seen.append(event.text)
        raise RuntimeError("callback bug")

    @engine.on("transcript")
    async def fine(event) -> None:
        seen.append("async:" + event.text)

    events = await engine_events(engine, TIMEOUT)
    assert len(of_type(events, "transcript")) == 2
    errors = of_type(events, "error")
    assert len(errors) == 2 and all("callback bug" in e.message and not e.fatal for e in errors)
    assert len(seen) == 4


async def test_speech_longer_than_the_maximum_is_split_and_all_transcribed(
    transcriber, clips
) -> None:
    burst = compose([0.5, *clips, 0.8])  # about 9 s of speech with short gaps under the hangover
    audio = burst
    vad = VadConfig(hangover_ms=600, post_roll_ms=300, max_utterance_ms=3000, split_search_ms=1000)
    events = await run_engine(audio, transcriber, EngineConfig(vad=vad, stats_interval_s=0))
    transcripts = of_type(events, "transcript")
    assert len(transcripts) >= 3
    assert any(t.reason == "max_length" for t in transcripts)
    assert all(t.t_end - t.t_start <= 3.0 + 1e-6 for t in transcripts)
    for a, b in itertools.pairwise(transcripts):
        assert a.t_end <= b.t_start + 1e-6  # pieces never overlap
    words = " ".join(t.text.lower() for t in transcripts)
    assert sum(key in words for *_, key in SENTENCES) >= 4, words


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 1e6


@pytest.mark.slow
async def test_thirty_minutes_without_memory_growth_and_nothing_lost(transcriber, clips) -> None:
    """Every utterance is accounted for, and RSS stays flat while the engine runs."""
    rng = np.random.default_rng(7)
    minute = compose([8.0, clips[0], 20.0, clips[3], 25.0], noise_db=-55, seed=1)
    minute = minute[: 60 * SAMPLE_RATE]
    audio = np.concatenate([minute] * 30) + rng.normal(0, 1e-4, 30 * len(minute)).astype(np.float32)
    expected = 60
    source = ArraySource(audio)
    del audio, minute
    gc.collect()
    counts = {"transcript": 0, "dropped": 0, "speech_start": 0}
    samples: list[float] = []
    engine = Engine(EngineConfig(stats_interval_s=0), source=source, transcriber=transcriber)

    async def collect() -> None:
        async with engine:
            async for event in engine.events():
                counts[event.type] = counts.get(event.type, 0) + 1
                if event.type == "transcript":
                    samples.append(rss_mb())

    await asyncio.wait_for(collect(), 600)
    stats = engine.stats()
    assert stats.utterances == counts["transcript"] + counts["dropped"] == stats.transcribed
    assert counts["transcript"] == expected, counts
    assert counts["dropped"] == 0
    warm = samples[len(samples) // 4]  # after allocator warm-up
    growth = max(samples[len(samples) // 4 :]) - warm
    assert growth < 8.0, f"RSS grew {growth:.1f} MB over 30 minutes of audio"


async def test_two_engines_share_one_transcriber(transcriber, clips) -> None:
    """One warm model, two pipelines at once (each its own source and events): every engine
    gets exactly the transcripts it gets alone."""
    first = compose([0.8, clips[0], 1.2, clips[1], 1.2], noise_db=-50)
    second = compose([0.5, clips[2], 1.0, clips[4], 1.0, clips[5], 1.2], noise_db=-50)

    def texts(events: list[Event]) -> list[str]:
        return [e.text for e in of_type(events, "transcript")]

    alone = [texts(await run_engine(audio, transcriber)) for audio in (first, second)]
    together = await asyncio.gather(*(run_engine(a, transcriber) for a in (first, second)))
    assert [texts(events) for events in together] == alone
    assert [len(t) for t in alone] == [2, 3], alone
