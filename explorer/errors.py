"""One exception family, raised at the boundary with a message that says what to do.

Pages and the CLI show ``str(error)`` to the user; they never show a traceback for these.
"""


class ExplorerError(Exception):
    """Anything the user can fix: a bad file, a bad plan, a model we cannot handle."""


class ModelError(ExplorerError):
    """The model file cannot be loaded or used (format, corruption, NaN weights, shapes)."""


class DataError(ExplorerError):
    """The validation data cannot be loaded or does not fit the model."""


class PlanError(ExplorerError):
    """The pruning plan is malformed or does not fit the model."""
