"""mindstream: near-real-time multi-interest user vectors (MIND) from a Kafka click stream.

This package holds what every stage shares: the settings object, the root exception and the
``mindstream`` command line. The stages live in the top-level packages ``model_export``,
``stream``, ``recall`` and ``infra``.
"""

__version__ = "0.1.0"
