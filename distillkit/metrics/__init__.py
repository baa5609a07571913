"""Metrics on synthetic and real sets (unequalness score, accuracy summaries)."""
