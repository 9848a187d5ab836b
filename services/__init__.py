"""The distributed demo: a Litestar API and workers per queue set, wired around arq-mediator."""
