"""Errors that reach a person: each carries a message that says what to do instead."""


class RequestError(ValueError):
    """An invalid generation request (shape, schedule, guidance, prompt, ...).

    ``field`` names the offending input so a form can put the message next to it.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    @property
    def message(self) -> str:
        return str(self)


class ModelLoadError(RuntimeError):
    """A model preset or checkpoint could not be loaded; the message says why and what to do."""


class Cancelled(Exception):
    """Sampling was stopped because the progress callback asked for it."""
