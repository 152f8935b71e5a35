"""`ModelTester`: the checks every model in `retina.models` must pass. A model's test class inherits it
and names itself (`name`, the `create` name) with small settings (`kwargs`); pytest collects the
inherited tests for each such class (segmentation_models.pytorch's base-tester pattern)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from retina.models import create


class ModelTester:
    name: ClassVar[str]
    kwargs: ClassVar[dict[str, Any]]
    size: ClassVar[tuple[int, int]] = (37, 45)  # odd, and not a multiple of any stride

    def build(self, **extra: Any) -> torch.nn.Module:
        torch.manual_seed(0)
        return create(self.name, **{**self.kwargs, **extra})

    @property
    def in_channels(self) -> int:
        return self.build().config["in_channels"]

    def test_forward_backward_any_size_and_empty_batch(self):
        model = self.build()
        x = torch.randn(2, self.in_channels, *self.size, requires_grad=True)
        y = model(x)
        assert y.shape == (2, 1, *self.size)
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        untrained = [name for name, p in model.named_parameters() if p.grad is None]
        assert not untrained  # an unused parameter breaks DistributedDataParallel (see test_trains_under_ddp)
        empty = x[:0].detach().requires_grad_()  # an empty batch (an uneven split's last shard)
        y = model(empty)
        assert y.shape == (0, 1, *self.size)
        y.sum().backward()
        assert empty.grad.shape == empty.shape

    def test_traces_on_the_meta_device(self):
        model = self.build().to("meta")
        with torch.no_grad():
            y = model(torch.empty(2, self.in_channels, *self.size, device="meta"))
        assert y.device.type == "meta" and y.shape == (2, 1, *self.size)

    def test_config_rebuilds_the_model(self):
        model = self.build(num_classes=2).eval()
        config = model.config
        assert config["name"] == self.name and config["num_classes"] == 2
        assert all(config[key] == value for key, value in self.kwargs.items())
        rebuilt = create(**config).eval()
        assert rebuilt.config == config
        rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape matches
        x = torch.randn(1, config["in_channels"], 24, 20)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), model(x))
        config["name"] = "changed"
        assert model.config["name"] == self.name  # `config` is a copy
