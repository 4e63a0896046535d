"""What engines and model loading raise: a leaf module, so any layer may import it."""


class EngineError(Exception):
    """An engine failed to load or to generate."""


class ModelLoadError(EngineError):
    """The model could not be found or loaded; the message says what to do instead."""
