"""DiceLoss and DiceCELoss take MONAI's arguments with MONAI's meaning and values: every combination that
MONAI accepts, on random float64 inputs, one channel and several, equals MONAI's result."""

import itertools
import warnings

import pytest
import torch

from retina.losses import DiceCELoss, DiceLoss

monai_losses = pytest.importorskip("monai.losses")


def inputs(channels: int, onehot_y: bool, activation: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, channels, 7, 9, generator=g, dtype=torch.float64) * 2
    if activation == "none":  # no activation: the input must be probabilities (ours checks)
        logits = torch.softmax(logits, 1) if channels > 1 else torch.sigmoid(logits)
    labels = torch.randint(0, max(channels, 2), (3, 1, 7, 9), generator=g)
    if channels == 1:
        target = labels.double()
    elif onehot_y:
        target = labels.clamp(max=channels - 1)
    else:
        target = torch.nn.functional.one_hot(labels[:, 0].clamp(max=channels - 1), channels).movedim(-1, 1).double()
    return logits, target


def tolerance(case):
    """MONAI one-hot encodes an index target in float32; with squared_pred it then takes the target's
    norm in float32 (sqrt, then squared): a float32 rounding of an exact count. Elsewhere float64."""
    if case["to_onehot_y"] and case["squared_pred"] and case["channels"] > 1:
        return dict(rtol=1e-6, atol=1e-7)
    return dict(rtol=1e-10, atol=1e-12)


def monai_result(cls, kwargs, logits, target):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**kwargs)(logits, target)
    except (ValueError, AssertionError, RuntimeError):
        return None  # a combination MONAI does not accept


FLAGS = {
    "activation": ["sigmoid", "softmax", "none"],
    "include_background": [True, False],
    "to_onehot_y": [False, True],
    "squared_pred": [False, True],
    "jaccard": [False, True],
    "batch": [False, True],
    "weighted": [False, True],
    "channels": [1, 3],
}


def combinations():
    for values in itertools.product(*FLAGS.values()):
        yield dict(zip(FLAGS, values))


def kwargs_of(case, reduction, smooth):
    kwargs = dict(include_background=case["include_background"], to_onehot_y=case["to_onehot_y"],
                  squared_pred=case["squared_pred"], jaccard=case["jaccard"], batch=case["batch"],
                  reduction=reduction, smooth_nr=smooth[0], smooth_dr=smooth[1])
    if case["activation"] != "none":
        kwargs[case["activation"]] = True
    if case["weighted"]:
        classes = case["channels"] - (0 if case["include_background"] or case["channels"] == 1 else 1)
        kwargs["weight"] = torch.linspace(0.5, 2.0, classes, dtype=torch.float64) if classes > 1 else 0.7
    return kwargs


def compared_with_monai(ours_cls, theirs_cls, kwargs, logits, target, case) -> bool:
    """Asserts ours equals MONAI's on this combination; False when MONAI does not accept it."""
    theirs = monai_result(theirs_cls, kwargs, logits, target)
    if theirs is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ours_cls(**kwargs)(logits, target)
    torch.testing.assert_close(ours, theirs.reshape(ours.shape), **tolerance(case), msg=str(case))
    return True


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dice_loss_equals_monai(reduction):
    compared = 0
    for i, case in enumerate(combinations()):
        logits, target = inputs(case["channels"], case["to_onehot_y"], case["activation"], seed=i)
        kwargs = kwargs_of(case, reduction, (1e-5, 1e-5) if i % 2 else (0.0, 1e-6))
        compared += compared_with_monai(DiceLoss, monai_losses.DiceLoss, kwargs, logits, target, case)
    assert compared > 300  # most combinations are accepted by MONAI; each was compared


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dice_ce_loss_equals_monai(reduction):
    compared = 0
    for i, case in enumerate(combinations()):
        if case["activation"] == "none" and case["channels"] == 1:
            continue  # cross-entropy takes logits; probabilities would be another problem for both
        logits, target = inputs(case["channels"], case["to_onehot_y"], case["activation"], seed=i)
        kwargs = kwargs_of(case, reduction, (1e-5, 1e-5))
        kwargs.update(lambda_dice=0.7, lambda_ce=1.3)
        if case["weighted"] and case["channels"] > 1:
            kwargs["weight"] = torch.linspace(0.5, 2.0, case["channels"], dtype=torch.float64)  # CE's: every class
        elif case["weighted"]:
            kwargs["weight"] = torch.tensor([0.7], dtype=torch.float64)  # BCE's pos_weight
        compared += compared_with_monai(DiceCELoss, monai_losses.DiceCELoss, kwargs, logits, target, case)
    assert compared > 100


def test_single_channel_cases_warn_and_proceed_as_monai():
    prob, target = torch.rand(2, 1, 5, 5, dtype=torch.float64), (torch.rand(2, 1, 5, 5) > 0.5).double()
    for flag in ({"include_background": False}, {"softmax": True}, {"to_onehot_y": True}):
        with pytest.warns(UserWarning, match="single channel prediction"):
            ours = DiceLoss(**flag)(prob, target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.testing.assert_close(ours, monai_losses.DiceLoss(**flag)(prob, target))
    # the one-channel binary case of DiceCELoss: sigmoid Dice + BCE with logits
    logits = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(DiceCELoss(sigmoid=True)(logits, target),
                               monai_losses.DiceCELoss(sigmoid=True)(logits, target))
