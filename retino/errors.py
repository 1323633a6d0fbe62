"""Errors a user can fix: each message names the problem and the fix (no traceback needed)."""


class RetinoError(Exception):
    """Base of the errors caused by input: config values, data files, missing weights."""


class ConfigError(RetinoError):
    """A config value is invalid; the message names the key and the allowed values."""


class DataError(RetinoError):
    """The dataset on disk is missing, malformed or unreadable."""


class WeightsUnavailableError(RetinoError):
    """Pretrained weights are neither cached, nor given as a file, nor downloadable."""
