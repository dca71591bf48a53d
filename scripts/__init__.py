"""Local entry points: run the flows (make run / sync / reconcile), chaos, connections.

Importable as ``scripts.runner`` from the repository root (the tests do); the scripts
themselves import it as ``runner`` (their own folder is first on sys.path).
"""
