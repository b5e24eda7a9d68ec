"""Checkpoint files: finding, converting and loading the weights into a `model.network.Moonshine`.

Imports nothing from `accel`: a loader only loads; speed paths are applied to the loaded model."""
