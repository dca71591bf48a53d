"""Benchmarks of issue 5: API calls, rate budget, overhead, memory, parse time, link store.

``python -m bench`` runs all six at sizes that fit in about 15 minutes on a 2-core
machine; ``python -m bench NAME`` runs one; ``--large`` uses the issue's full sizes.
See ``bench/RESULTS.md`` for the latest figures.
"""
