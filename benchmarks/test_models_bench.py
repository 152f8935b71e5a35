"""Every model at its recipe's input size (configs/): one training step (forward, loss on every output,
backward, AdamW step) and forward throughput (eval, no grad), time and peak memory. CPU rows at batch 1
(the recipes' batches take minutes per round on 2 cores); CUDA rows at the recipe's batch."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES

from retina.models import create

# name: (constructor kwargs, input side, recipe batch, classes of the target)
RECIPES = {
    "s3octa": (dict(in_channels=3), 304, 1, 1),
    "dscnet": (dict(in_channels=1), 304, 2, 1),
    "unet-drive": (dict(name="unet", in_channels=1, norm="batch"), 256, 8, 1),
    "unet-oct-layers": (dict(name="unet", in_channels=1, num_classes=9), 640, 2, 9),
    "iternet": (dict(in_channels=3), 128, 32, 1),
    "vesselfaznet": (dict(in_channels=3), 304, 2, 1),
}


def build(key):
    kwargs, side, batch, classes = RECIPES[key]
    kwargs = dict(kwargs)
    return create(kwargs.pop("name", key), **kwargs), kwargs.get("in_channels", 1), side, batch, classes


def outputs(y):
    if isinstance(y, dict):
        return list(y.values())
    return list(y) if isinstance(y, (list, tuple)) else [y]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key", RECIPES)
@pytest.mark.parametrize("what", ["train-step", "forward"])
def test_model(measure, device, key, what):
    torch.manual_seed(0)
    model, channels, side, batch, classes = build(key)
    batch = batch if device == "cuda" else 1
    model = model.to(device)
    x = torch.rand(batch, channels, side, side, device=device)
    if what == "forward":
        model.eval()

        def run():
            with torch.no_grad():
                return model(x)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = (torch.rand(batch, 1, side, side, device=device) > 0.8).float() if classes == 1 else \
            torch.randint(0, classes, (batch, side, side), device=device)

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = sum(F.binary_cross_entropy_with_logits(o, target) if classes == 1 else F.cross_entropy(o, target)
                       for o in outputs(model(x)))
            loss.backward()
            optimizer.step()
            return loss

    measure(run, device, group=f"{what} {key} {batch}x{side}² ({device})", impl=key, rounds=3)
