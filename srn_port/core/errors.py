"""Errors that srn-port reports to users.

Every error a user can cause (a bad path, a corrupt file, a wrong option) is an
:class:`SrnPortError`. Its message is one paragraph that says what was expected, what
was found and what to do; the CLI prints it without a traceback and exits non-zero.
"""


class SrnPortError(Exception):
    """A user-facing error: the message is shown as-is by the CLI."""


class CheckpointError(SrnPortError):
    """A TensorFlow checkpoint could not be located, read or verified."""


class ConversionError(SrnPortError):
    """A checkpoint's variables do not fit the SRN model."""


class ModelFileError(SrnPortError):
    """A converted srn-port weights file could not be read."""


class ImageError(SrnPortError):
    """An image file or array that cannot be deblurred (unreadable, unsupported kind)."""


class FileWriteError(SrnPortError):
    """An output file could not be written (read-only folder, full disk); nothing was left."""
