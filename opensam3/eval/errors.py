"""The one error type evaluation raises for bad input; the CLI prints its message and exits."""

from opensam3.errors import OpenSam3Error


class EvalInputError(OpenSam3Error, ValueError):
    """Input files or objects are missing, malformed or inconsistent; the message says how to fix it."""
