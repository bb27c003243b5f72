"""Errors raised while starting, checking and stopping local services."""

from __future__ import annotations

from mindstream.errors import MindstreamError


class InfraError(MindstreamError):
    """Root of the errors of the ``infra`` package."""


class BinaryNotFoundError(InfraError):
    """A service's executable is not installed; the message says how to install it."""


class ServiceStartError(InfraError):
    """A service exited or did not answer in time; the message quotes the end of its log."""


class ServiceExitedError(ServiceStartError):
    """A service ended while starting (a port taken in the meantime, a bad flag, ...)."""


class ServiceStateError(InfraError):
    """The state file of the local services cannot be read, or describes something else."""
