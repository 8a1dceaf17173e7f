"""User-facing errors.

Every error a user can cause (unknown model, bad checkpoint, bad YAML, unwritable output, an op a format cannot
take) is raised as a subclass of :class:`HvitError`. The command-line tools print its message on one line and exit
non-zero; they never show a traceback for these.
"""
from __future__ import annotations


class HvitError(Exception):
    """Base class of errors caused by input; the message is one line meant for the user."""

    exit_code = 2

    def __str__(self) -> str:  # keep messages on one line whatever the caller passed
        return " ".join(super().__str__().split())


class UnknownModelError(HvitError, LookupError):
    pass


class CheckpointError(HvitError):
    pass


class ConfigError(HvitError):
    """A recipe or profile (YAML) that cannot be used."""


class RewriteError(HvitError):
    pass


class ExportError(HvitError):
    pass


class ValidationError(HvitError):
    """An export whose outputs differ from PyTorch by more than the recipe allows."""


class OutputError(HvitError):
    """An output path that cannot be written."""


class BackendUnavailableError(HvitError):
    """A runtime that is not installed or has no device here (for example CUDA on a machine without a GPU)."""


class LabelsError(HvitError):
    """A class-labels file that cannot be read or does not fit the model's classes."""


class HvitNotice(UserWarning):
    """Something the user should know that is not an error (e.g. a checkpoint's head sets the class count).
    ``hvit-export`` prints each on one line on stderr."""
