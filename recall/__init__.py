"""Recall stage: Faiss item index, candidate merge and the HTTP recall service."""

import logging

# Faiss's loader logs at INFO each CPU-specific module it does not ship (the generic build
# dispatches to AVX2/AVX-512 at run time): noise in every recall process's start-up log.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
