"""Choosing what to learn from: shots, coverage grids, dedupe and balance, the target's profile."""
