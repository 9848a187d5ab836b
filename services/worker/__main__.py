"""Run a demo worker: ``python -m services.worker general|balanced|heavy``."""

from services.worker.entrypoint import main

main()
