"""Stage 1, capture: audio from a microphone, a file or an array as fixed 30 ms frames."""
