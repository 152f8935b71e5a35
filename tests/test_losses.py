"""retina.losses: formulas, perfect predictions, batch independence, errors, and training decreases them."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from retina.data import vessel_mask
from retina.losses import (
    DiceCELoss,
    DiceLoss,
    IBPclDiceLoss,
    MultiTaskLoss,
    SkeletonRecallLoss,
    SoftclDiceLoss,
    SoftDiceclDiceLoss,
)
from retina_kernels.reference import soft_skeleton as soft_reference


def vessels(batch=2, size=48, seed=0):
    return torch.from_numpy(np.stack([vessel_mask(size, size, seed=seed + i) for i in range(batch)])[:, None]).float()


def noisy(target, seed=0, amount=0.3):
    gen = torch.Generator().manual_seed(seed)
    return (target * (1 - amount) + amount * torch.rand(target.shape, generator=gen)).clamp(0, 1)


def test_single_channel_soft_cldice_is_nonzero_and_matches_formula():
    target = vessels(1, 40)
    pred = noisy(target, 1)
    loss = SoftclDiceLoss(num_iter=7, smooth=1.0)(pred, target)
    sp, st = soft_reference.soft_skeleton(pred, 7), soft_reference.soft_skeleton(target, 7)
    t_prec = ((sp * target).sum() + 1) / (sp.sum() + 1)
    t_sens = ((st * pred).sum() + 1) / (st.sum() + 1)
    expected = 1 - 2 * t_prec * t_sens / (t_prec + t_sens)
    assert loss > 0.01
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_num_iter_is_a_real_parameter():
    target = vessels(1, 48)
    pred = noisy(target, 2)
    assert SoftclDiceLoss(num_iter=2)(pred, target) != SoftclDiceLoss(num_iter=10)(pred, target)


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(), SoftclDiceLoss(), SoftDiceclDiceLoss(), IBPclDiceLoss(), SkeletonRecallLoss()],
    ids=lambda l: type(l).__name__,
)
def test_perfect_prediction_gives_about_zero(loss):
    target = vessels(2, 48)
    assert float(loss(target.clone(), target)) < 1e-3


def test_dice_matches_formula_and_flags():
    target = vessels(2, 32)
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * target).sum((2, 3)) + 1e-5) / (p.sum((2, 3)) + target.sum((2, 3)) + 1e-5)
    torch.testing.assert_close(DiceLoss(sigmoid=True, reduction="none")(logits, target), expected)
    torch.testing.assert_close(DiceLoss(sigmoid=True, reduction="sum")(logits, target), expected.sum())
    # multi-class with a class-index target, background excluded
    logits3 = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    values = DiceLoss(softmax=True, include_background=False, reduction="none")(logits3, labels)
    assert values.shape == (2, 2)


@pytest.mark.parametrize("loss_cls", [DiceLoss, SoftclDiceLoss, SkeletonRecallLoss, SoftDiceclDiceLoss])
def test_batch_elements_do_not_interact(loss_cls):
    target = vessels(3, 40, seed=5)
    pred = noisy(target, 3)
    together = loss_cls(reduction="none")(pred, target)
    assert together.shape == (3, 1)
    for i in range(3):
        torch.testing.assert_close(together[i : i + 1], loss_cls(reduction="none")(pred[i : i + 1], target[i : i + 1]))


def test_ibp_cldice_batch_correct_with_fixed_noise():
    """Each sample's loss depends on that sample only (S3-OCTA's copy mixes the batch)."""
    target = vessels(3, 40, seed=9)
    pred = noisy(target, 4)
    loss = IBPclDiceLoss(reduction="none", beta=0.0)  # beta 0: deterministic binarisation
    together = loss(pred, target)
    for i in range(3):
        torch.testing.assert_close(together[i : i + 1], loss(pred[i : i + 1], target[i : i + 1]))
    changed = pred.clone()
    changed[0] = 1 - changed[0]
    torch.testing.assert_close(loss(changed, target)[1:], together[1:])


@pytest.mark.parametrize(
    "loss_cls", [DiceLoss, SoftclDiceLoss, SoftDiceclDiceLoss, IBPclDiceLoss, SkeletonRecallLoss, DiceCELoss]
)
def test_empty_batch_reduces_like_torch(loss_cls):
    # An empty batch (an uneven split's last shard): the mean over nothing is NaN, as in torch's own
    # losses, the sum 0, and backward runs.
    channels = 2 if loss_cls is DiceCELoss else 1
    input = torch.rand(0, channels, 16, 16, requires_grad=True)
    target = torch.zeros(0, channels, 16, 16)
    assert torch.isnan(loss_cls()(input, target))
    total = loss_cls(reduction="sum")(input, target)
    total.backward()
    assert total == 0 and input.grad.shape == input.shape
    if loss_cls is not DiceCELoss:  # (which has no per-element form)
        assert loss_cls(reduction="none")(input, target).shape == (0, channels)


def test_gradients_flow_to_the_prediction():
    target = vessels(2, 40)
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(3), requires_grad=True)
    for loss in (SoftclDiceLoss(sigmoid=True), IBPclDiceLoss(sigmoid=True), SkeletonRecallLoss(sigmoid=True)):
        logits.grad = None
        loss(logits, target).backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0 and torch.isfinite(logits.grad).all()


def test_dice_ce_multiclass():
    logits = torch.randn(2, 4, 12, 12, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.randint(0, 4, (2, 1, 12, 12), generator=torch.Generator().manual_seed(1))
    loss = DiceCELoss(softmax=True)(logits, labels)
    loss.backward()
    ce = nn.functional.cross_entropy(logits.detach(), labels[:, 0])
    dice = DiceLoss(softmax=True)(logits.detach(), labels)
    torch.testing.assert_close(loss.detach(), dice + ce)
    perfect = nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).float() * 40 - 20
    assert DiceCELoss(softmax=True)(perfect, labels) < 1e-3


def test_multitask_fixed_and_s2anet_balance():
    target = vessels(1, 32)
    pred = noisy(target, 5)
    faz = torch.zeros_like(target)
    faz[..., 10:20, 10:20] = 1
    faz_pred = noisy(faz, 6)
    tasks = {"vessel": DiceLoss(), "faz": DiceLoss()}
    fixed = MultiTaskLoss(tasks, weights={"vessel": 0.7, "faz": 0.3})
    total, parts = fixed({"vessel": pred, "faz": faz_pred}, {"vessel": target, "faz": faz})
    torch.testing.assert_close(total, 0.7 * parts["vessel"] + 0.3 * parts["faz"])
    dynamic = MultiTaskLoss(tasks, weights="s2anet", total_epochs=100)
    total, parts = dynamic({"vessel": pred, "faz": faz_pred}, {"vessel": target, "faz": faz}, epoch=50)
    l1, l2 = float(parts["vessel"]), float(parts["faz"])
    alpha = 0.1 + 0.8 * math.sin(math.pi / 4) + 0.1 * (l1 - l2) / (l1 + l2)
    torch.testing.assert_close(float(total), alpha * l1 + (1 - alpha) * l2)
    with pytest.raises(ValueError, match="needs the current epoch"):
        dynamic({"vessel": pred, "faz": faz_pred}, {"vessel": target, "faz": faz})


@pytest.mark.parametrize(
    "loss, input, target, error, match",
    [
        (DiceLoss(), torch.full((1, 1, 4, 4), 1.5), torch.zeros(1, 1, 4, 4), ValueError, r"probabilities in \[0, 1\]"),
        (DiceLoss(), torch.full((1, 1, 4, 4), float("nan")), torch.zeros(1, 1, 4, 4), ValueError, "input contains NaN"),
        (DiceLoss(sigmoid=True), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 5, 4), ValueError, "target shape"),
        (DiceLoss(), torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 2.0), ValueError, r"target must be in \[0, 1\]"),
        (DiceLoss(softmax=True), torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 3), ValueError, "class indices"),
        (SoftclDiceLoss(), torch.zeros(4, 4), torch.zeros(4, 4), ValueError, r"input must be \[B, C, H, W\]"),
        (IBPclDiceLoss(), torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), ValueError, "IBPclDiceLoss is 2D"),
    ],
)
def test_errors(loss, input, target, error, match):
    with pytest.raises(error, match=match):
        loss(input, target)


def test_constructor_errors():
    with pytest.raises(ValueError, match="mutually exclusive"):
        DiceLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="reduction"):
        DiceLoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        SoftDiceclDiceLoss(alpha=1.5)


@pytest.mark.parametrize(
    "loss",
    [DiceLoss(sigmoid=True), SoftclDiceLoss(sigmoid=True, num_iter=5), SoftDiceclDiceLoss(sigmoid=True, num_iter=5),
     IBPclDiceLoss(sigmoid=True), SkeletonRecallLoss(sigmoid=True)],
    ids=lambda l: type(l).__name__,
)
def test_training_a_tiny_model_decreases_the_loss(loss):
    torch.manual_seed(0)
    target = vessels(2, 48, seed=11)
    image = target * 0.6 + 0.4 * torch.rand(target.shape)  # vessels brighter than a noisy background
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        value = loss(model(image), target)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
