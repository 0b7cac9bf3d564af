"""What a device or a worker runs, whatever runs it: a model's blocks on numpy arrays.

Two backends implement it: `splitting.torch_blocks.TorchBlocks` (eager PyTorch, the reference
whose answers are the model's own) and `splitting.onnx_blocks.OnnxBlocks` (an exported build
run by ONNX Runtime, with no torch in the process). Arrays are float32 (B, 3, S, S) at split 0
and the split-k tensor after; prepared images are uint8 (S, S, 3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from schemas.frame import ModelInfo


class Blocks(Protocol):
    """One model build, runnable as any range of its blocks."""

    @property
    def backend(self) -> str: ...

    @property
    def version(self) -> str:
        """The backend's version, recorded with what it measured."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def block_names(self) -> list[str]: ...

    @property
    def n(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def input_size(self) -> int: ...

    @property
    def labels(self) -> list[str]: ...

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Any uint8 RGB, gray or RGBA image -> uint8 (S, S, 3)."""
        ...

    @property
    def prepare_recipe(self) -> int:
        """The FORMAT.md 11.2 recipe version `prepare_image` follows (a request says it in its
        `splitmq-prepare` property)."""
        ...

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Prepared uint8 (S, S, 3) or (B, S, S, 3) images -> normalised float32 (B, 3, S, S)."""
        ...

    def run_blocks(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Blocks [start, stop) on a batch of split-`start` tensors."""
        ...

    def top(self, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row of (B, ...) logits: the k highest softmax probabilities and their classes,
        computed as this backend's worker computes them."""
        ...

    def model_info(self) -> ModelInfo:
        """What the wire contract needs of this build: name, fingerprint, split shapes."""
        ...
