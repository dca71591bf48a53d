"""Seed data for the sandboxes (``generate.py`` writes the committed JSON files)."""
