"""The peer benchmark's workload and one module per job system (arq, saq, taskiq, streaq, arq-mediator).

Each ``<system>_peer`` module registers the job the system's way and holds the parent's client and the
variants; each ``<system>_worker`` module is what that system's worker process imports; `workload` is the
job body they all run. ``tests/benchmarks/bench_peers.py`` drives them.
"""
