"""A command cut in two by a pause, put back together.

Why: people pause inside commands ("set the kitchen light to ... forty two percent"), longer
than the VAD's hangover, so the segmenter closes an utterance that is only the start of a
command. Decoded within the grammar, that start is recognised as such (`Recognition.unfinished`);
instead of refusing it, the engine holds it for `join_within_ms`. If the next utterance begins
by then, the two are decoded as one (with a short silence between them); if that is a command,
it is the result, else the held refusal is reported after all and the next utterance is decoded
on its own. Nothing held is lost: it is reported when the window passes, or when the audio ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..capture.audio import SAMPLE_RATE
from ..commands.constrained import Recognition
from .schedule import Job

GAP_KEPT_S = 0.3
"""Silence kept between the joined parts: a pause, whatever its length (the model needs no more
to hear two phrases, and a longer decode costs time)."""


@dataclass(frozen=True)
class Held:
    """A final whose recognition is an unfinished command, waiting for what follows."""

    job: Job
    recognition: Recognition

    def continued_by(self, job: Job, within_samples: int) -> bool:
        return job.final and 0 <= job.start_sample - self.job.end_sample <= within_samples

    def joined_with(self, job: Job) -> Job:
        """One final of both parts: from the held start to the new end."""
        gap = min(job.start_sample - self.job.end_sample, int(GAP_KEPT_S * SAMPLE_RATE))
        silence = np.zeros(max(0, gap), dtype=np.float32)
        return Job(
            audio=np.concatenate([self.job.audio, silence, job.audio]).astype(np.float32),
            start_sample=self.job.start_sample,
            end_sample=job.end_sample,
            final=True,
            reason="joined",
            speech_end_sample=job.speech_end_sample,
            emitted_at=job.emitted_at,
        )

    def expired(self, position: int, within_samples: int, in_utterance: bool) -> bool:
        """The window has passed with no new speech (speech in progress may still continue
        it: its final decides)."""
        return not in_utterance and position - self.job.end_sample > within_samples
