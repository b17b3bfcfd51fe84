"""The paired benchmark: swap quality measured against a known ideal swap."""
