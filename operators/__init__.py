"""Frame-level steps: segmenters, keyframe policy, propagation, association, encoding and sinks.

Nothing here knows about Ray; ``pipeline`` composes these steps.
"""
