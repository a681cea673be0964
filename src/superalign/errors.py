"""The exception hierarchy. Every message says what was wrong and what to do."""

import errno


class SuperalignError(Exception):
    """Base of every error superalign raises on purpose."""


class ConfigError(SuperalignError):
    """A configuration value is invalid; the message names its key path."""


class UnknownComponentError(ConfigError):
    """A component name is not registered; the message lists the valid names."""


class ModelError(SuperalignError):
    """A model could not be loaded or could not answer."""


class EndpointError(ModelError):
    """An OpenAI-compatible endpoint failed after retries; the message names it."""


class BundledModelError(ModelError):
    """The bundled model could not be fetched or converted."""


class StoreError(SuperalignError):
    """The run store is missing, locked by another process, or inconsistent."""


class StoreBusyError(StoreError):
    """The run database stayed busy (another process writing) for longer than the wait."""


class WriteError(SuperalignError):
    """A file could not be written (disk full, quota, read-only); the message names it
    and says what to do."""


# errno values that mean "no room to write", and how the writers word them when they
# hide the OSError (safetensors' Rust I/O error, SQLite's "database or disk is full").
_NO_SPACE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, name)
)
# Compared with the message lowercased and without spaces.
_NO_SPACE_WORDS = ("nospaceleft", "storagefull", "diskisfull", "quotaexceeded")


def is_no_space(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        text = "".join(str(current).lower().split())
        if any(word in text for word in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def write_failure(error: BaseException) -> str:
    """A short reason for a failed write: "no space left on device" where the disk or
    quota is full, else the error's own words."""
    if is_no_space(error):
        return "no space left on device"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"{type(error).__name__}: {error}"
