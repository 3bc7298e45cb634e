"""Errors raised for bad input. Each message names what was wrong and what to do."""


class OpenSam3Error(Exception):
    """Base class: the CLI prints these as one line instead of a traceback."""


class InvalidInputError(OpenSam3Error, ValueError):
    """An image, prompt or argument the caller gave cannot be used."""


class CheckpointError(OpenSam3Error):
    """A checkpoint file is missing, unreadable, or does not fit the model."""
