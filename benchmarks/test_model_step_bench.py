"""One training step (forward, loss, backward, SGD step) of DSCNet and S3-OCTA on our dsconv2d vs the
same models on the reference op (which materialises the samples); and the cost of IBP-clDice inside a
DSCNet step. Issue #3 target: S3-OCTA peak memory <= 1/3 of the reference's, step time <= 1/2.
Issue #4 target: IBP-clDice <= 20% of a DSCNet step at 304², batch 4 (compare "bce" with
"bce+ibp-cldice" in the same group)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES

import retina_kernels
from retina.data import vessel_mask
from retina.losses import IBPclDiceLoss
from retina.models import S3OCTA, DSCNet
from retina_kernels.reference import dsconv as reference

MODELS = {"dscnet": lambda **kw: DSCNet(in_channels=1, **kw), "s3octa": lambda **kw: S3OCTA(in_channels=3, **kw)}


def batch(device, model_name, size, n):
    masks = np.stack([vessel_mask(size, size, seed=i) for i in range(n)])[:, None]
    target = torch.from_numpy(masks).float()
    channels = 1 if model_name == "dscnet" else 3
    image = target.expand(n, channels, size, size) * 0.6 + 0.4 * torch.rand(n, channels, size, size)
    return image.contiguous().to(device), target.to(device)


def training_step(model, image, target, extra_loss=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(image)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if extra_loss is not None:
            loss = loss + extra_loss(logits, target)
        loss.backward()
        optimizer.step()
        return loss

    return step


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("size", [304, 400])
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("impl", ["ours", "reference", "ours+checkpointing"])
def test_model_step(measure, monkeypatch, model_name, size, n, impl):
    """"ours+checkpointing" is the model built with checkpointing=True, as on a small GPU: what it costs in
    time and saves in memory (not part of the comparison with the reference, which could checkpoint too)."""
    if "cuda" not in DEVICES:
        pytest.skip("GPU benchmark (minutes per step on a CPU)")
    if impl == "reference":
        monkeypatch.setattr(retina_kernels, "dsconv2d", reference.dsconv2d)
    torch.manual_seed(0)
    model = MODELS[model_name](checkpointing=impl == "ours+checkpointing").cuda()
    image, target = batch("cuda", model_name, size, n)
    measure(training_step(model, image, target), "cuda", group=f"{model_name} step {n}×{size}² cuda", impl=impl,
            rounds=3)


@pytest.mark.parametrize("loss", ["bce", "bce+ibp-cldice"])
@pytest.mark.parametrize("device", DEVICES)
def test_ibp_cldice_share_of_dscnet_step(measure, loss, device):
    size, n = (304, 4) if device == "cuda" else (96, 2)
    torch.manual_seed(0)
    model = DSCNet(in_channels=1).to(device)
    image, target = batch(device, "dscnet", size, n)
    extra = IBPclDiceLoss(sigmoid=True) if loss != "bce" else None
    measure(training_step(model, image, target, extra), device, group=f"dscnet step + loss {n}×{size}² {device}",
            impl=loss, rounds=5 if device == "cuda" else 2)
