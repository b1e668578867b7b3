"""Domain errors: anything a user can cause and fix, reported by the CLI as one line, `Error: <message>`.

Each message names the file or the key at fault and the problem.
"""


class FmnistError(Exception):
    """Base class for fmnist-yolo errors that the CLI reports as `Error: <message>`."""


class ConfigError(FmnistError, ValueError):
    """An argument, recipe or configuration value is invalid."""


class DataError(FmnistError, ValueError):
    """A source file or the prepared tree is missing, unreadable, malformed or does not match its manifest."""


class IDXError(DataError):
    """An IDX file is missing, unreadable or malformed."""


class ChecksumError(DataError):
    """A source file does not match the official Fashion-MNIST checksums."""


class RunError(FmnistError, ValueError):
    """A run directory or a checkpoint is missing, unfinished, damaged or of another kind."""


class FmnistWarning(UserWarning):
    """Something the user should know and may act on (shown by the CLI as `WARNING: <message>`)."""


def warn(message: str) -> None:
    """Issue an FmnistWarning attributed to the caller's caller (silence with the `warnings` module)."""
    import warnings

    warnings.warn(message, FmnistWarning, stacklevel=3)
