import numpy as np
import pytest
import torch

from training.clusters import balanced_assignment, cluster_labels, recluster


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


def test_recluster_follows_the_features_and_keeps_each_clusters_code():
    """Three groups of features, 30 each; the current clusters name group g "cluster (g + 1) % 3" but have
    a fifth of the points in the wrong one. Re-clustering puts every point with its group and keeps the
    names the clusters had (cluster c grows out of cluster c: the code G learnt for it stays valid)."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 6) * 5
    group = np.arange(90) % 3
    feats = centres[group] + rng.normal(0, 0.3, (90, 6))
    named = (group + 1) % 3
    prev = named.copy()
    wrong = rng.choice(90, 18, replace=False)
    prev[wrong] = (prev[wrong] + 1) % 3
    out = recluster(feats, prev, 3)
    assert out.tolist() == named.tolist()
    assert np.array_equal(recluster(feats, prev, 3), out)  # no random start
    # Scale does not matter (unit-length features); the clusters stay equal when the groups are not (50/20/20).
    uneven = centres[np.repeat([0, 1, 2], [50, 20, 20])] + rng.normal(0, 0.3, (90, 6))
    out = recluster(uneven * 100, np.arange(90) % 3, 3)
    assert np.bincount(out).tolist() == [30, 30, 30]
    assert np.array_equal(out, recluster(uneven, np.arange(90) % 3, 3))
    with pytest.raises(ValueError, match="cluster"):
        recluster(feats, prev[:10], 3)
    with pytest.raises(ValueError, match="cluster"):
        recluster(feats, np.full(90, 3), 3)
