"""The demo's workers: one entrypoint per queue set, ``python -m services.worker general|balanced|heavy``."""
