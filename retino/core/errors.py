"""Errors a user can fix: each message names the problem and the fix (no traceback needed)."""


class RetinoError(Exception):
    """Base of the errors caused by input: config values, data files, missing weights."""


class ConfigError(RetinoError):
    """A config value is invalid; the message names the key and the allowed values."""


class DataError(RetinoError):
    """The dataset on disk is missing, malformed or unreadable."""


class BundleError(RetinoError):
    """A study bundle is damaged, changed since its export, or made on other code or data."""


class WeightsUnavailableError(RetinoError):
    """Pretrained weights are neither cached, nor given as a file, nor downloadable."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """An error's first line (its type's name when it says nothing), at most `limit` characters:
    for a log line or a message, where a library's own text runs to paragraphs."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


def user_message(err: BaseException) -> str:
    """The message a user should read.

    An error raised inside a DataLoader worker comes back re-raised with the worker's whole
    traceback in its message; the last line holds the original `Type: message`.
    """
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[-1] if last.split(": ", 1)[0].endswith("Error") else last
    return text
