"""Run a worker from the command line: ``python -m arq_mediator worker package.module:mediator ...``."""

from ._cli import main

main()
