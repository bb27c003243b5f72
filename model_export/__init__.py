"""Model stage: data loaders, the MIND model in torch, training, evaluation and bundle export.

Only ``model_export.bundle`` (the bundle format and its verifying loader) is imported by the
serving side; it must never import torch.
"""
