"""X-SAM's VGD post-processing rule against its literal definition: every (query, label) pair scored as class
score x mean sigmoid inside its image-size mask, none skipped. Our rule brings up only the pairs that can
reach the threshold; the results must be the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xsam import postprocessing
from xsam.processing_xsam import ImageGeometry

GEOMETRY = ImageGeometry(canvas=64, scaled_size=(36, 64), image_size=(90, 160))


def _literal_instances(probs, mask_logits, threshold):
    """X-SAM's rule with every pair's mask at image size."""
    scores, queries, labels = postprocessing._query_pairs(probs)
    logits = postprocessing.mask_logits_to_image(mask_logits, GEOMETRY)[queries]
    masks = logits > 0
    inside = masks.flatten(1).float()
    final = scores * (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    keep = (final >= threshold) & masks.flatten(1).any(1)
    order = torch.argsort(final[keep], descending=True)
    return masks[keep][order].numpy(), final[keep][order].numpy(), labels[keep][order].numpy(), queries[keep][order]


@pytest.mark.parametrize("seed", range(6))
def test_vgd_instances_equal_the_literal_rule_while_bringing_up_fewer_masks(seed, monkeypatch):
    generator = torch.Generator().manual_seed(seed)
    num_queries, num_labels = 40, 3
    probs = torch.rand(num_queries, num_labels, generator=generator) ** 0.3  # many class scores near 1
    # Logits of every scale: confident queries, hesitant ones (mask scores near 0.5) and empty ones.
    scale = torch.tensor([0.01, 0.5, 4.0, -3.0])[torch.randint(0, 4, (num_queries,), generator=generator)]
    mask_logits = torch.randn(num_queries, 16, 16, generator=generator) * scale[:, None, None].abs() + scale[:, None, None].clamp(max=0)
    states = torch.randn(num_queries, 8, generator=generator)
    brought_up = []
    to_image = postprocessing.mask_logits_to_image
    monkeypatch.setattr(postprocessing, "mask_logits_to_image",
                        lambda logits, geometry: (brought_up.append(len(logits)), to_image(logits, geometry))[1])
    threshold = 0.6
    ours = postprocessing.instances(probs, mask_logits, states, GEOMETRY, threshold)
    masks, scores, labels, queries = _literal_instances(probs, mask_logits, threshold)
    assert len(ours) == len(masks) > 0
    np.testing.assert_array_equal(ours.masks, masks)
    np.testing.assert_allclose(ours.scores, scores, rtol=1e-6)
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_allclose(ours.embeddings, states[queries].numpy())
    pair_scores, pair_queries, _ = postprocessing._query_pairs(probs)
    by_class_score = len(pair_queries[pair_scores >= threshold].unique())  # what the class scores alone let up
    assert brought_up[0] < by_class_score  # [0]: ours (the literal rule brought up every query)


def test_mask_score_bounds_hold_at_image_size():
    logits = torch.randn(30, 16, 16, generator=torch.Generator().manual_seed(3)) * 3
    image = postprocessing.mask_logits_to_image(logits, GEOMETRY)
    _, scores = postprocessing._mask_scores(image)
    assert (scores <= postprocessing._mask_score_bounds(logits) * (1 + postprocessing.BOUND_SLACK)).all()
