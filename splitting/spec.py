"""What a model is to splitmq: how to build it and cut it into blocks (`ModelSpec`).

A leaf module: the registry (`splitting.registry`) keeps the specs, the zoo (`splitting.zoo`)
writes the built-in ones; both import this, neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from splitting.pixels import IMAGENET_MEAN, IMAGENET_STD

#: `weights="random"`: the architecture's own initialisation under the spec's seed.
RANDOM_WEIGHTS = "random"

BlockList = Sequence[tuple[str, nn.Module]]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model and cut it into blocks.

    - `build()` returns the architecture with its own (random) initialisation; the registry
      calls it under a fixed seed (`seed`) so every process gets the same weights.
    - `blocks(module)` returns the ordered `(name, block)` list; each block maps one tensor to
      one tensor, and running them in order must reproduce `module(x)` exactly.
    - `named_weights(name)` (optional) returns the model with a named set of weights loaded
      from local files, raising `WeightsUnavailableError` when they are not on this machine.
    """

    name: str
    build: Callable[[], nn.Module]
    blocks: Callable[[nn.Module], BlockList]
    input_size: int = 224
    default_weights: str = RANDOM_WEIGHTS
    named_weights: Callable[[str], nn.Module] | None = None
    labels: Sequence[str] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    seed: int = 0
