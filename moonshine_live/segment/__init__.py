"""Stage 2, segmenting: frames into utterances (voice activity, pauses, hangover)."""
