"""The model registry: registered models, immutable versions, aliases (see models.py)."""
