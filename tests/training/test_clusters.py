import numpy as np
import pytest
import torch

from training.clusters import balanced_assignment, cluster_labels


def test_balanced_assignment_sends_a_big_clusters_overflow_to_the_next_nearest():
    # Five points nearest cluster 0, one nearest cluster 1: room is 3 + 3.
    dist = np.array([[0.0, 5.0], [0.1, 4.0], [0.2, 1.0], [0.3, 0.9], [0.4, 3.0], [2.0, 0.0]])
    out = balanced_assignment(dist)
    assert np.bincount(out).tolist() == [3, 3]
    # Cluster 0 fills with the three points nearest to it (0, 1, 2); the next two go to cluster 1.
    assert out.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(("n", "k"), [(10, 3), (7, 7), (100, 6)])
def test_balanced_assignment_sizes_differ_by_at_most_one(n, k):
    out = balanced_assignment(np.random.default_rng(0).random((n, k)))
    sizes = np.bincount(out, minlength=k)
    assert sizes.sum() == n and sizes.max() - sizes.min() <= 1 and (out >= 0).all()


def test_cluster_labels_find_separate_groups_and_are_reproducible():
    g = torch.Generator().manual_seed(0)
    # Three kinds of 8×8 image (bright left half, bright right half, dark), 30 each, with pixel noise.
    base = torch.zeros(3, 1, 8, 8)
    base[0, :, :, :4], base[1, :, :, 4:] = 200, 200
    kind = torch.arange(90) % 3
    images = (base[kind] + torch.randint(0, 40, (90, 1, 8, 8), generator=g)).to(torch.uint8)
    labels = cluster_labels(images, 3, seed=1)
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [30, 30, 30]
    for c in range(3):  # each cluster is one kind of image
        assert len(set(kind[labels == c].tolist())) == 1
    assert torch.equal(labels, cluster_labels(images, 3, seed=1))
    with pytest.raises(ValueError, match="cannot cut"):
        cluster_labels(images[:2], 3)
