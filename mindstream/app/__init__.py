"""The application layer: the ``mindstream`` command line and the jobs that span stages (the
demo, ``publish``, ``report``, ``bench``). Nothing below this package imports it."""
