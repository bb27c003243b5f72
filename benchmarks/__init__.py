"""Benchmarks, the worker harness and load generators: tools that measure the system.

Nothing in the product imports this package; it imports the stages. ``mindstream bench TARGET``
dispatches to ``benchmarks.<target>_bench:main`` (``model_bench`` for ``tower`` and ``train``).
:mod:`benchmarks.harness` runs a stream worker as a child process for the integration tests and
the stream benchmark; :mod:`benchmarks.malformed` is the catalogue of malformed click records;
:mod:`benchmarks.catalogue` draws structured synthetic item catalogues.
"""
