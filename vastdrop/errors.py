"""One exception family, split by what the caller should do about it."""


class VastdropError(Exception):
    """Root of every error this project raises on purpose."""


class TransientError(VastdropError):
    """Worth retrying: network hiccups, throttling, a deadline, a dead host."""


class CapacityError(TransientError):
    """Our own caps (instances, $/h) or the provider's limits are full: wait, without using up an attempt."""


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
