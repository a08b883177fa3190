"""One exception family, split by what the caller should do about it."""


class VastdropError(Exception):
    """Root of every error this project raises on purpose."""


class TransientError(VastdropError):
    """Worth retrying: network hiccups, throttling, a deadline, a dead host."""


class CapacityError(TransientError):
    """Our own caps (instances, $/h) or the provider's limits are full: wait, without using up an attempt.
    `retry_after_s`, when known, is how long to wait before asking again."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ApiBusyError(CapacityError):
    """The provider's API is paced or throttled (rate limit, daily quota): the job waits its turn."""


class AccountError(CapacityError):
    """The provider account refuses launches (out of credit, account limits, key refused): not the job's
    fault, so no job fails; launches stop until it clears."""


class PermanentError(VastdropError):
    """Retrying cannot help: the input or the request itself is wrong."""


class BadInputError(PermanentError):
    """The input object is not a processable video (empty, undecodable, no video stream)."""


class ConfigError(PermanentError):
    """Settings are missing or invalid."""


class NotFoundError(PermanentError):
    """The object or instance does not exist."""


class ModelLoadError(PermanentError):
    """A weights file is missing, unreadable, or not a supported model."""
