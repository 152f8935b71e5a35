"""`SegmentationModel`: the base of retina's models. It records each model's constructor arguments as
`model.config`, so that `retina.models.create(**model.config)` rebuilds the same architecture (the
trainer's checkpoints store it beside the weights)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


class SegmentationModel(nn.Module):
    """A model whose constructor arguments are its config.

    `config`: {"name": the model's `retina.models.create` name, **every constructor argument with its
    value, defaults included}. Subclasses need do nothing: wrapping of `__init__` happens at class
    creation; the config is that of the class actually instantiated (a subclass's, not its parent's).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if type(self) is cls:  # a subclass calling super().__init__ records its own arguments instead
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                config: dict[str, Any] = {"name": model_name(cls)}
                for name, value in list(bound.arguments.items())[1:]:  # (after self)
                    if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        config.update(value)
                    else:
                        config[name] = value
                self._config = config

        cls.__init__ = recording_init

    @property
    def size_multiple(self) -> int:
        """The input side the network's strides divide: other sizes are padded up to it internally.
        Tiles on this grid see the image as the whole-image forward does (retina.inference)."""
        return 1

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (a copy), with the model's name: `create(**config)` rebuilds it."""
        return dict(self._config)


def main_output(output: Any) -> Any:
    """What a model predicts: its tensor (or dict of named tensors), or the last of a list (deep
    supervision, IterNet's iterations)."""
    return output[-1] if isinstance(output, (list, tuple)) else output


def named_outputs(output: Any) -> dict[str, Any]:
    """A model's prediction by output name: {"": logits} for one tensor, the dict of a model with named
    outputs as it is."""
    output = main_output(output)
    return dict(output) if isinstance(output, dict) else {"": output}


def model_name(cls: type) -> str:
    """The `create` name of a model class: its class name, lower case ("DSCNet" -> "dscnet")."""
    return cls.__name__.lower()
