"""Benchmarks: each figure of the product measured beside its floor, a bare Temporal equivalent, on one machine.

`python -m bench.run` starts its own stack (embedded PostgreSQL, the Temporal dev server, the API and the
workers as separate processes, as in production), prints a table and writes `bench/results.json`.
"""
