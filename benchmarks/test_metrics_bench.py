"""Metric throughput: every retina.metrics score on 20 images of 565×584 (DRIVE's size), CPU and GPU;
beside it the same figures from scikit-learn / scikit-image on the CPU."""

import functools

import numpy as np
import pytest
import torch
from conftest import DEVICES
from skimage.measure import euler_number, label
from sklearn.metrics import average_precision_score, roc_auc_score

from retina import metrics
from retina.data import vessel_mask


@functools.lru_cache(maxsize=None)
def drive_like(n=20, h=584, w=565):
    target = torch.from_numpy(np.stack([vessel_mask(h, w, seed=i) for i in range(n)]))
    gen = torch.Generator().manual_seed(0)
    prob = (target.double() * 0.7 + 0.45 * torch.rand(n, h, w, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return prob, target


def all_metrics(prob, target):
    hard = prob > 0.5
    return (metrics.overlap_scores(hard, target), metrics.roc_auc(prob, target), metrics.pr_auc(prob, target),
            metrics.hd95(hard, target), metrics.cldice(hard, target), metrics.betti_errors(hard, target))


def sklearn_skimage(prob, target):
    p, t = prob.numpy(), target.numpy()
    roc, ap = roc_auc_score(t.ravel(), p.ravel()), average_precision_score(t.ravel(), p.ravel())
    betti = [(label(m, connectivity=2).max(), euler_number(m, connectivity=2)) for m in (p > 0.5)]
    return roc, ap, betti


@pytest.mark.parametrize("impl", ["retina", "sklearn+skimage"])
@pytest.mark.parametrize("device", DEVICES)
def test_metric_throughput(measure, impl, device):
    if impl != "retina" and device != "cpu":
        pytest.skip("scikit-learn runs on the CPU")
    prob, target = drive_like()
    prob, target = prob.to(device), target.to(device)
    fn = all_metrics if impl == "retina" else sklearn_skimage
    measure(lambda: fn(prob, target), device, group=f"metrics 20×584×565 {device}", impl=impl, rounds=2)
