"""Exceptions, worded as the longmamba CLI words the same refusals."""


class LongMambaTableError(ValueError):
    """Base class: a table that cannot be read or applied."""


class NotAStoreError(LongMambaTableError):
    """The file is not a longmamba SQLite database."""


class NewerSchemaError(LongMambaTableError):
    """The database was written by a newer longmamba."""


class UnknownTableError(LongMambaTableError, KeyError):
    """No table with that id."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ModelMismatchError(LongMambaTableError):
    """The table belongs to another model (fingerprint, layers or channels)."""


class UnsupportedModelError(LongMambaTableError, TypeError):
    """The model class has no Mamba mixers this package knows how to patch."""


class WholePromptError(LongMambaTableError):
    """A whole-prompt method (alpha, bound, norm, channelwise_topk) was given a prompt in pieces."""


class EvaluationError(LongMambaTableError):
    """An evaluation (perplexity, passkey) refused, as `longmamba eval` refuses it."""


class PasskeyError(EvaluationError):
    """Passkey prompts that cannot be built (depth, length, haystack, tokenizer)."""


class BatchTooLargeError(EvaluationError):
    """A batch of prompts does not fit in the device's memory; the message names a batch size that may."""


class UnknownMethodError(LongMambaTableError):
    """A table whose method (or row kind) this package does not know: written by a newer tool.
    The store's other tables still read."""


class CalibrationError(LongMambaTableError):
    """A scale calibration (`calibrate_scales`) refused: the job, its store or its model."""
