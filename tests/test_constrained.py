"""Grammar-constrained decoding on the real model: the beam against the masked greedy decode,
the early exit against the full search, and commands and non-commands of real TTS speech
through the live engine and the `recognize` command."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import soundfile
import torch
from conftest import decisions, engine_events
from speech import compose, tts_wav

from moonshine_live.accel.compiled import CompiledRowsStep
from moonshine_live.asr.constrained import beam_decode
from moonshine_live.capture.sources import ArraySource
from moonshine_live.commands.actions import ActionConfig
from moonshine_live.commands.constrained import GrammarDecoder
from moonshine_live.commands.stage import CommandConfig, resolve_grammar_path
from moonshine_live.engine.engine import Engine, EngineConfig
from moonshine_live.grammar import load_grammar
from moonshine_live.grammar.matcher import Matcher
from moonshine_live.model.decoding import greedy_decode, rows_caches, rows_step

pytestmark = [pytest.mark.needs_weights, pytest.mark.needs_tts]

COMMANDS = [  # (text, voice, variant, intent, slots)
    ("turn on the kitchen lights", "flite", "slt", "lights_power",
     {"power": True, "room": "kitchen"}),
    ("set a timer for twelve minutes", "espeak", "en-us", "timer_set",
     {"amount": 12, "unit": "min"}),
    ("dim the bedroom lights to forty percent", "espeak", "en-gb", "lights_brightness",
     {"room": "bedroom", "brightness": 40}),
    ("turn off the lights in the hallway", "flite", "rms", "lights_power",
     {"power": False, "room": "hallway"}),
]  # fmt: skip
NON_COMMANDS = [
    ("what a lovely day", "espeak", "en-us"),
    ("I think we should go home now", "flite", "slt"),
    ("the kids are playing in the garden", "espeak", "en-gb"),
    ("did you see the game last night", "flite", "rms"),
]


def clip(text: str, voice: str, variant: str, noise_db: float | None = None) -> np.ndarray:
    return compose([0.3, tts_wav(text, voice, variant=variant), 0.4], noise_db=noise_db)


@pytest.fixture(scope="module")
def decoder(transcriber) -> GrammarDecoder:
    return GrammarDecoder(transcriber, Matcher(load_grammar([resolve_grammar_path("home")])))


class MaskFilter:
    """The automaton as a `LogitFilter` (a vocabulary mask per state): the masked greedy decode."""

    def __init__(self, automaton, vocab: int) -> None:
        self.automaton, self.vocab = automaton, vocab

    def initial_state(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size,), self.automaton.start, dtype=torch.long)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(len(state), self.vocab, dtype=torch.bool)
        for row, s in enumerate(state.tolist()):
            mask[row, self.automaton.allowed(s)[0]] = True
        return mask

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        nexts = [
            self.automaton.advance(s, t)
            for s, t in zip(state.tolist(), tokens.tolist(), strict=True)
        ]
        return torch.tensor([self.automaton.start if n is None else n for n in nexts])


def encoded(transcriber, audio: np.ndarray) -> torch.Tensor:
    samples = torch.from_numpy(audio)[None]
    return transcriber.model.encode(samples, None, transcriber._encoder_layers)[0]


@pytest.mark.parametrize("index", range(len(COMMANDS)))
def test_beam_of_one_is_the_masked_greedy_decode(transcriber, decoder, index) -> None:
    text, voice, variant, *_ = COMMANDS[index]
    audio = clip(text, voice, variant, noise_db=-35.0)
    automaton = decoder.automaton((), "command")
    budget = transcriber.budget(len(audio))

    def both():
        with torch.inference_mode():
            features = encoded(transcriber, audio)
            mask = MaskFilter(automaton, transcriber.model.config.vocab_size)
            (greedy,) = greedy_decode(
                transcriber.model, features, None, [budget], logit_filter=mask
            )
            beam = beam_decode(
                transcriber.model, features, automaton, budget, beam=1,
                step=transcriber._rows_step,
            )  # fmt: skip
            return greedy, beam

    greedy, beam = transcriber.on_compute_thread(both)
    assert beam.finished and greedy.stop_reason == "eos"
    assert beam.finished[0].tokens == greedy.tokens
    # the masked step renormalises over the allowed tokens; the beam scores over the vocabulary
    beam_logprobs = beam.finished[0].token_logprobs[:-1]
    assert all(b <= g + 1e-3 for b, g in zip(beam_logprobs, greedy.token_logprobs, strict=True))


@pytest.mark.parametrize("noise_db", [None, -30.0])
def test_the_early_exit_never_changes_the_result(transcriber, decoder, noise_db) -> None:
    automaton = decoder.automaton((), "command")
    for text, voice, variant, *_ in COMMANDS + [(*n, None, None) for n in NON_COMMANDS[:2]]:
        audio = clip(text, voice, variant, noise_db)
        budget = transcriber.budget(len(audio))

        def search(early: bool, audio=audio, budget=budget):
            with torch.inference_mode():
                features = encoded(transcriber, audio)
                return beam_decode(
                    transcriber.model, features, automaton, budget, early_exit=early,
                    step=transcriber._rows_step,
                )  # fmt: skip

        early = transcriber.on_compute_thread(search, True)
        full = transcriber.on_compute_thread(search, False)
        assert early.steps <= full.steps
        assert [h.tokens for h in early.finished[:1]] == [h.tokens for h in full.finished[:1]]
        if early.finished:
            assert early.finished[0].score == pytest.approx(full.finished[0].score, abs=1e-5)


def test_the_free_row_of_a_search_is_the_free_decode(transcriber, decoder) -> None:
    """The free transcript comes from one more row of the search's steps, not a decode of its
    own: it must be what `transcribe` gives, token for token."""
    automaton = decoder.automaton((), "command")
    for text, voice, variant, *_ in COMMANDS + [(*n, None, None) for n in NON_COMMANDS]:
        for noise_db in (None, -30.0):
            audio = clip(text, voice, variant, noise_db)
            free, found = transcriber.transcribe_within(audio, automaton)
            alone = transcriber.transcribe(audio)
            assert free.tokens == alone.tokens, text
            assert free.stop_reason == alone.stop_reason
            assert free.avg_logprob == pytest.approx(alone.avg_logprob, abs=1e-3)
            assert found.free is not None and found.steps >= len(free.tokens)


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_the_packaged_search_step_gives_the_eager_steps_log_probabilities(
    transcriber, rows
) -> None:
    """Rows with different histories over one utterance's shared cross K/V: the package (any
    row count up to the op's pass) against the eager step, position by position."""
    step = transcriber._rows_step
    assert isinstance(step, CompiledRowsStep), "the test transcriber compiles its steps"
    model = transcriber.model
    audio = clip(*COMMANDS[1][:3])
    generator = torch.Generator().manual_seed(rows)
    tokens = torch.randint(0, model.config.vocab_size, (6, rows, 1), generator=generator)

    def run(each_step):
        with torch.inference_mode():
            model.prefill_cross(encoded(transcriber, audio))
            cross = (
                [layer.cross_k for layer in model.decoder.layers],
                [layer.cross_v for layer in model.decoder.layers],
            )
            state = (*rows_caches(model, rows), *cross)
            return [each_step(model, tokens[pos], pos, state).clone() for pos in range(6)]

    packaged = transcriber.on_compute_thread(run, step)
    assert step._package is not None, "the search step was not packaged"
    eager = transcriber.on_compute_thread(run, rows_step)
    for pos, (a, b) in enumerate(zip(packaged, eager, strict=True)):
        assert a.shape == (rows, model.config.vocab_size)
        assert torch.allclose(a, b, atol=2e-3), f"position {pos}: {(a - b).abs().max()}"
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_commands_are_found_and_non_commands_refused(decoder) -> None:
    for text, voice, variant, intent, slots in COMMANDS:
        found = decoder.recognize(clip(text, voice, variant))
        assert found.command is not None, (text, found)
        assert (found.command.intent, dict(found.command.slots)) == (intent, slots), found
        assert found.confidence >= decoder.config.min_confidence
        assert not found.unfinished
    for text, voice, variant in NON_COMMANDS:
        found = decoder.recognize(clip(text, voice, variant))
        assert found.command is None and found.rejected, (text, found)
        assert not found.unfinished, (text, found)


STARTS = [  # the start of a command, and nothing after it
    ("set the kitchen light to", "flite", "rms"),
    ("set a timer for", "flite", "slt"),
    ("set the kitchen light to", "espeak", "en-gb"),
    ("set a timer for", "espeak", "en-us"),
]


def test_the_start_of_a_command_is_unfinished_not_a_command_with_an_invented_end(
    decoder,
) -> None:
    """Read as a whole command, the start would need an end the audio does not have ("... to
    2."): it is refused as unfinished instead, for the engine to join with what follows."""
    for text, voice, variant in STARTS:
        found = decoder.recognize(clip(text, voice, variant))
        assert found.command is None and found.unfinished, (text, found)
        assert found.rejected == "unfinished" or not found.text, (text, found)


def test_confidence_is_higher_clean_than_noisy_and_in_grammar_than_out(decoder) -> None:
    def confidence(text, voice, variant, noise_db=None) -> float:
        return decoder.recognize(clip(text, voice, variant, noise_db)).confidence

    clean = [confidence(t, v, w) for t, v, w, *_ in COMMANDS]
    noisy = [confidence(t, v, w, -22.0) for t, v, w, *_ in COMMANDS]
    others = [confidence(t, v, w) for t, v, w in NON_COMMANDS]
    assert statistics.mean(clean) > statistics.mean(noisy), (clean, noisy)
    assert min(clean) > max(others), (clean, others)


async def test_the_live_engine_decodes_within_the_grammar(transcriber) -> None:
    parts: list = [0.5]
    for text, voice, variant, *_ in COMMANDS[:2]:
        parts += [tts_wav(text, voice, variant=variant), 1.2]
    parts += [tts_wav(NON_COMMANDS[0][0], NON_COMMANDS[0][1], variant=NON_COMMANDS[0][2]), 1.2]
    audio = compose(parts, noise_db=-60.0)
    commands = CommandConfig(grammars=("home",), actions=ActionConfig(dry_run=True))
    assert commands.decode == "constrained"  # the default with a grammar
    config = EngineConfig(commands=commands, stats_interval_s=0, partial_interval_ms=0)
    engine = Engine(config, source=ArraySource(audio), transcriber=transcriber)
    events = await engine_events(engine, 120.0)
    decisions(events)
    got = [e for e in events if e.type == "command"]
    assert [(c.intent, c.slots) for c in got] == [(c[3], c[4]) for c in COMMANDS[:2]]
    assert all(c.decode == "constrained" and 0 < c.confidence <= 1 for c in got)
    assert all("confidence" in c.to_json() and "alternatives" in c.to_json() for c in got)
    (rejected,) = [e for e in events if e.type == "rejected"]
    assert rejected.decode == "constrained" and "lovely" in rejected.text.lower()


PAUSED = ("set the kitchen light to", "forty two percent")
"""A command with a pause inside it longer than the VAD's hangover: two utterances."""


async def paused_command_run(transcriber, join_within_ms: int, then_s: float = 1.5) -> list:
    head, tail = (tts_wav(text, "espeak", variant="en-us") for text in PAUSED)
    audio = compose([0.5, head, 0.9, tail, then_s, head, 2.5], noise_db=-60.0)
    commands = CommandConfig(grammars=("home",), actions=ActionConfig(dry_run=True))
    config = EngineConfig(
        commands=commands, stats_interval_s=0, partial_interval_ms=0,
        join_within_ms=join_within_ms,
    )  # fmt: skip
    engine = Engine(config, source=ArraySource(audio), transcriber=transcriber)
    return await engine_events(engine, 120.0)


async def test_a_command_cut_by_a_pause_is_joined_into_one(transcriber) -> None:
    """The first part is the start of a command, so it waits for the second and the two are
    decoded as one; the same start said again and never finished is still reported."""
    events = await paused_command_run(transcriber, join_within_ms=1500)
    pairs = decisions(events)
    assert [p[1].type for p in pairs] == ["command", "rejected"], [p[0].text for p in pairs]
    command = pairs[0][1]
    assert (command.intent, command.slots) == (
        "lights_brightness",
        {"room": "kitchen", "brightness": 42},
    )
    assert command.t_start < 0.6 and command.t_end > 2.5  # both parts
    assert pairs[0][0].reason == "joined"
    assert pairs[1][1].t_start > command.t_end  # the unfinished start said alone: not lost


async def test_without_joining_the_paused_command_is_two_refusals(transcriber) -> None:
    """What the join repairs: each part alone is no command."""
    pairs = decisions(await paused_command_run(transcriber, join_within_ms=0))
    assert len(pairs) == 3 and all(p[1].type == "rejected" for p in pairs), pairs


def test_recognize_gives_one_json_result_per_file(cli, tmp_path) -> None:
    paths = []
    for text, voice, variant in [COMMANDS[1][:3], NON_COMMANDS[1]]:
        path = tmp_path / f"{len(paths)}.wav"
        soundfile.write(path, clip(text, voice, variant), 16000)
        paths.append(str(path))
    code, out, err = cli("recognize", "--grammar", "home", "--json", *paths)
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["file"] == paths[0] and first["type"] == "command"
    assert first["intent"] == "timer_set" and first["slots"] == {"amount": 12, "unit": "min"}
    assert second["type"] == "rejected" and second["decode"] == "constrained"


def test_recognize_names_a_missing_file(cli, tmp_path) -> None:
    code, _, err = cli("recognize", "--grammar", "home", tmp_path / "nope.wav")
    assert code != 0 and "nope.wav" in err
