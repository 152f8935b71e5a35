"""`ModelTester`: the checks every model in `retina.models` must pass. A model's test class inherits it
and names itself (`name`, the `create` name) with small settings (`kwargs`); pytest collects the
inherited tests for each such class (segmentation_models.pytorch's base-tester pattern)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from retina.models import create


def tensors(output: Any) -> list[torch.Tensor]:
    """A model's logits as a list: one tensor, every deep-supervision output, or every named output."""
    if isinstance(output, dict):
        return list(output.values())
    if isinstance(output, (list, tuple)):
        return list(output)
    return [output]


class ModelTester:
    name: ClassVar[str]
    kwargs: ClassVar[dict[str, Any]]
    size: ClassVar[tuple[int, int]] = (37, 45)  # odd, and not a multiple of any stride
    # constructor arguments that change the output channels (test_config_rebuilds_the_model)
    two_classes: ClassVar[dict[str, Any]] = {"num_classes": 2}

    def build(self, **extra: Any) -> torch.nn.Module:
        torch.manual_seed(0)
        return create(self.name, **{**self.kwargs, **extra})

    @property
    def in_channels(self) -> int:
        return self.build().config["in_channels"]

    def test_forward_backward_any_size_and_empty_batch(self):
        model = self.build()
        x = torch.randn(2, self.in_channels, *self.size, requires_grad=True)
        y = tensors(model(x))
        assert all(t.shape == (2, 1, *self.size) for t in y)
        sum(t.square().mean() for t in y).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        untrained = [name for name, p in model.named_parameters() if p.grad is None]
        assert not untrained  # an unused parameter breaks DistributedDataParallel (see test_trains_under_ddp)
        empty = x[:0].detach().requires_grad_()  # an empty batch (an uneven split's last shard)
        y = tensors(model(empty))
        assert all(t.shape == (0, 1, *self.size) for t in y)
        sum(t.sum() for t in y).backward()
        assert empty.grad.shape == empty.shape

    def test_traces_on_the_meta_device(self):
        model = self.build().to("meta")
        with torch.no_grad():
            y = tensors(model(torch.empty(2, self.in_channels, *self.size, device="meta")))
        assert all(t.device.type == "meta" and t.shape == (2, 1, *self.size) for t in y)

    def test_config_rebuilds_the_model(self):
        model = self.build(**self.two_classes).eval()
        config = model.config
        assert config["name"] == self.name and all(config[k] == v for k, v in self.two_classes.items())
        assert all(config[key] == value for key, value in self.kwargs.items())
        rebuilt = create(**config).eval()
        assert rebuilt.config == config
        rebuilt.load_state_dict(model.state_dict())  # same architecture: every key and shape matches
        x = torch.randn(1, config["in_channels"], 24, 20)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), model(x))
        config["name"] = "changed"
        assert model.config["name"] == self.name  # `config` is a copy

    def test_batches_of_one_and_three_agree_in_eval(self):
        # float64: in float32 a snake's sampling position that rounds across a pixel line amplifies
        # convolution-order rounding (oneDNN picks other algorithms for other batch sizes)
        model = self.build().double().eval()
        x = torch.randn(3, self.in_channels, *self.size, dtype=torch.float64)
        with torch.no_grad():
            three, one = tensors(model(x)), tensors(model(x[1:2]))
        for a, b in zip(three, one):
            torch.testing.assert_close(a[1:2], b, rtol=1e-9, atol=1e-10)

    def test_a_few_training_steps_lower_the_loss(self):
        from retina.data import SyntheticOCTA

        model = self.build().train()
        data = SyntheticOCTA(length=2, size=32, channels=self.in_channels)
        x = torch.stack([data[i]["image"] for i in range(2)])
        target = torch.stack([data[i]["mask"] for i in range(2)])
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(8):
            optimizer.zero_grad()
            loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(t, target) for t in tensors(model(x)))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]

    def test_compiles_to_one_graph(self):
        # torch.compile(fullgraph=True): no graph break anywhere (custom ops, checkpointing, named outputs);
        # aot_eager traces forward and backward as inductor would, without inductor's minutes of codegen
        torch._dynamo.reset()
        model = self.build().double().eval()
        x = torch.randn(1, self.in_channels, *self.size, dtype=torch.float64)
        with torch.no_grad():
            expected = tensors(model(x))
            compiled = tensors(torch.compile(model, backend="aot_eager", fullgraph=True)(x))
        for a, b in zip(compiled, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
