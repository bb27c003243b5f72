"""Recall stage: Faiss item index, candidate merge and the HTTP recall service."""
