"""Errors raised by the engine.

Every message says what was wrong and, where one exists, a value that would
work. The Processing provider turns :class:`EngineError` into a
``QgsProcessingException`` once, at its boundary; scripts see these classes.
"""


class EngineError(Exception):
    """A problem the user can act on; ``str(err)`` is the whole explanation."""


class InputError(EngineError):
    """An input (parameter, raster, vector) that cannot be used as given."""


class DependencyError(EngineError):
    """A Python package the engine needs is missing or of the wrong version."""


class Cancelled(EngineError):
    """The user asked to stop; outputs were removed."""
