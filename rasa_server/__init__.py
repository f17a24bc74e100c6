"""Rasa as we run it: stock Rasa 3.6 with measured speed-ups applied first (speedups.py)."""
