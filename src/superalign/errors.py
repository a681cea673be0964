"""The exception hierarchy. Every message says what was wrong and what to do."""


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
