"""A PyTorch split model behind the numpy `Blocks` interface (splitting.blocks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

from splitting.partition import SplitModel
from splitting.pixels import RECIPE_VERSION

if TYPE_CHECKING:
    from schemas.frame import ModelInfo


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch with `threads` intra-op threads (None: as set), restoring the previous
    setting after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_top(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (B, ...) logits: the k highest fp32 softmax probabilities and their classes."""
    with torch.inference_mode():
        probabilities = torch.softmax(logits.float().flatten(1), dim=1)
        top = torch.topk(probabilities, k=min(k, probabilities.shape[1]), dim=1)
    return top.values.cpu().numpy(), top.indices.cpu().numpy()


class TorchBlocks:
    """`model`'s blocks in eager PyTorch. numpy and torch share the memory both ways, so the
    arrays cost no copy, and the answers stay the model's own bit for bit."""

    backend = "torch"
    version = torch.__version__

    def __init__(self, model: SplitModel) -> None:
        self.model = model

    @property
    def block_names(self) -> list[str]:
        return self.model.block_names

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def n(self) -> int:
        return self.model.n

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def input_size(self) -> int:
        return self.model.input_size

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        return self.model.prepare_image(image)

    @property
    def prepare_recipe(self) -> int:
        return RECIPE_VERSION  # SplitModel.prepare_image is splitting.pixels'

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return self.model.preprocess(images).numpy()

    def run_blocks(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        with torch.inference_mode():
            if stop == self.n:  # the tail's own checks of the intermediate's shape
                out = self.model.tail(torch.from_numpy(x), start)
            else:
                out = self.model.run_blocks(torch.from_numpy(x), start, stop)
        return out.numpy()

    def top(self, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return torch_top(torch.from_numpy(logits), k)

    def model_info(self) -> ModelInfo:
        return self.model.model_info()
