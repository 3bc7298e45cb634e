"""The one error type evaluation raises for bad input; the CLI prints its message and exits."""


class EvalInputError(ValueError):
    """Input files or objects are missing, malformed or inconsistent; the message says how to fix it."""
