"""Errors raised by the model stage."""

from mindstream.errors import MindstreamError


class ModelExportError(MindstreamError):
    """Base of the model stage's errors."""


class BundleError(ModelExportError):
    """A bundle is missing, incomplete, tampered with or of an unknown format."""


class DataFormatError(ModelExportError):
    """A data file does not have the format it was said to have."""
