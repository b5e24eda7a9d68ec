"""Stage 3, speech recognition: `Transcriber` (model + tokenizer + the fastest decode path)."""
