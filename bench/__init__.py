"""Benchmark material: synthetic clips with ground truth for scoring the pipeline end to end."""
