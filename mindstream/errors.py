"""The project's root exception; each stage derives its own boundary errors from it."""


class MindstreamError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(MindstreamError):
    """A setting is missing or has a value that cannot be used."""
