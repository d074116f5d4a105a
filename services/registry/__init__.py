"""The registry: verifies, stores and describes every model version (``python -m services.registry``)."""
