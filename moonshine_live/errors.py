"""The package's exception tree: one root so callers can catch everything we raise on purpose."""

from __future__ import annotations


class MoonshineLiveError(Exception):
    """Root of every error moonshine-live raises deliberately."""


class ConfigError(MoonshineLiveError, ValueError):
    """A configuration value is unknown or out of range; the message names the field."""


class WeightsError(MoonshineLiveError):
    """A checkpoint is missing, corrupt or does not fit the model; the message names the file."""


class AudioFormatError(MoonshineLiveError, ValueError):
    """Audio that cannot be used: unreadable file, empty, NaN samples, wrong shape or rate."""


class AudioDeviceError(MoonshineLiveError):
    """A capture device is missing or failed; the message lists the devices there are."""


class GrammarError(MoonshineLiveError):
    """A grammar file is invalid; carries the file, line and column of the problem."""

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        where = ":".join(str(p) for p in (file, line, column) if p is not None)
        super().__init__(f"{where}: {message}" if where else message)
