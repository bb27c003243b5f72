"""mindstream: near-real-time multi-interest user vectors (MIND) from a Kafka click stream.

This package is the base layer every stage imports: the settings object (:mod:`.settings`),
the root exceptions (:mod:`.errors`), the Kafka and Redis client factories
(:mod:`.kafka_config`, :mod:`.redis_config`, :mod:`.topics`), the shared command-line run
loop (:mod:`.command`) and progress bars (:mod:`.progress`). Its subpackage
:mod:`mindstream.app` is the application layer on top (the ``mindstream`` command line, the
demo, ``publish``, ``report``). The stages live in the top-level packages ``model_export``,
``stream`` and ``recall``; ``infra`` runs local services.
"""

__version__ = "0.1.0"
