"""Domain errors: anything a user can cause and fix, reported by the CLI as one line."""


class FmnistError(Exception):
    """Base class for fmnist-yolo errors that the CLI reports as `Error: <message>`."""


class IDXError(FmnistError, ValueError):
    """An IDX file is missing, unreadable or malformed."""


class ChecksumError(FmnistError, ValueError):
    """A source file does not match the official Fashion-MNIST checksums."""


class ConfigError(FmnistError, ValueError):
    """An argument or configuration value is invalid."""
