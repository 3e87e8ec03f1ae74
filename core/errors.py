"""One family of errors whose messages are written for people.

Every error the engine raises on purpose is a `MergerError`: it names the file and
tensor involved, says what is wrong and what to do. The CLI prints `str(error)` as one
line; the GUI shows it in a dialog. Anything else reaching a front is a bug.
"""

from __future__ import annotations

from pathlib import Path


class MergerError(Exception):
    """An error caused by the input or the environment, explained for the user."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        tensor: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.tensor = tensor
        self.hint = hint
        super().__init__(self.__str__())

    @property
    def reason(self) -> str:
        """What is wrong, where: the file and the tensor, then the message (no remedy)."""
        where = []
        if self.file:
            where.append(self.file)
        if self.tensor:
            where.append(f"tensor '{self.tensor}'")
        return f"{': '.join(where)}: {self.message}" if where else self.message

    def __str__(self) -> str:
        # The remedy follows as a clause of its own: hints hold parentheses themselves,
        # and '(… (x shaped …))' read badly on the command line.
        return f"{self.reason}; {self.hint}" if self.hint else self.reason


class CheckpointError(MergerError):
    """A model file or folder cannot be read, or is not what it claims to be."""


class OutputError(MergerError):
    """The output cannot be written where asked (exists, is an input, no space, no permission)."""


class IncompatibleModelsError(MergerError):
    """The models cannot be merged together (keys, shapes or dtypes differ)."""


class RecipeError(MergerError):
    """A recipe or a parameter is invalid: unknown method, bad type, out of range."""


class ResourceError(MergerError):
    """Not enough memory or disk for the requested work."""


class Cancelled(Exception):  # noqa: N818 - the name reads as what happened
    """Raised inside a job when the user asked to cancel it. Not an error."""
