"""A classifier cut into an ordered list of blocks, runnable as head(k) and tail(k).

Split k runs blocks [0, k) on the device and [k, n) on the server. `forward` runs the original,
unsplit module, so the partition is checked against the model itself: for every k,
`tail(head(x, k), k)` equals `forward(x)` bit for bit in fp32 eval mode.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from splitting.errors import InvalidInputError, InvalidSplitError
from splitting.labels import labels_for
from splitting.pixels import IMAGENET_MEAN, IMAGENET_STD, checked_batch, prepare_image

if TYPE_CHECKING:
    from schemas.frame import ModelInfo


def model_fingerprint(name: str, block_names: Sequence[str], module: nn.Module) -> str:
    """16 hex chars of sha256 over the name, the block names and every state_dict tensor.

    Two processes that build the same architecture with the same weights agree on it; any
    changed weight, shape, dtype or block boundary changes it.
    """
    digest = hashlib.sha256()
    digest.update(name.encode())
    for block_name in block_names:
        digest.update(b"\0block\0" + block_name.encode())
    for key, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\0tensor\0{key}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the raw bytes, no copy
    return digest.hexdigest()[:16]


class SplitModel:
    """A model cut into `n` blocks; all computation in eval mode under `torch.inference_mode()`."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        blocks: Sequence[tuple[str, nn.Module]],
        *,
        input_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        labels: Sequence[str] | None = None,
        weights: str = "random",
    ) -> None:
        self.name = name
        self.module = module.eval()
        self.block_names = [block_name for block_name, _ in blocks]
        self.blocks = nn.ModuleList([block for _, block in blocks]).eval()
        self.n = len(self.blocks)
        self.input_size = input_size
        self.weights = weights
        self.mean: tuple[float, float, float] = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.std: tuple[float, float, float] = (float(std[0]), float(std[1]), float(std[2]))
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._given_labels = list(labels) if labels is not None else None
        self._block_shapes: tuple[tuple[int, ...], ...] | None = None
        self._labels: list[str] | None = None
        self.fingerprint = model_fingerprint(name, self.block_names, module)

    def __repr__(self) -> str:
        return f"SplitModel({self.name!r}, n={self.n}, fingerprint={self.fingerprint})"

    # -- images ---------------------------------------------------------------------------

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        """Any RGB (or gray, or RGBA) uint8 image -> uint8 (S, S, 3): resize, then center crop."""
        return prepare_image(image, self.input_size)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (S, S, 3) or (B, S, S, 3) -> normalised float32 (B, 3, S, S)."""
        pixels = checked_batch(images, self.input_size, self.name)
        if not pixels.flags.writeable:  # torch wants to own writable memory
            pixels = pixels.copy()
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        return ((x - self._mean) / self._std).contiguous()

    # -- head, tail, forward --------------------------------------------------------------

    def head(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks [0, k) on a batch (B, 3, H, W); k = 0 returns x itself."""
        self._check_split(k)
        self._check_input(x)
        return self._run(x, 0, k)

    def tail(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks [k, n) on a batch of split-k tensors (B, *shape of split k)."""
        self._check_split(k)
        if k == 0:
            self._check_input(z)
        else:
            self._check_intermediate(z, k)
        return self._run(z, k, self.n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unsplit model (the original module's own forward)."""
        self._check_input(x)
        with torch.inference_mode():
            out: torch.Tensor = self.module(x)
        return out

    def head_outputs(self, x: torch.Tensor, ks: Sequence[int]) -> dict[int, torch.Tensor]:
        """Run the blocks once and keep the split-k tensors for every k in `ks` (0..n)."""
        self._check_input(x)
        wanted = set(ks)
        for k in wanted:
            self._check_split(k)
        kept: dict[int, torch.Tensor] = {0: x} if 0 in wanted else {}
        last = max(wanted, default=0)
        with torch.inference_mode():
            for index in range(last):
                x = self.blocks[index](x)
                if index + 1 in wanted:
                    kept[index + 1] = x
        return kept

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks [start, stop) on a batch of split-`start` tensors (head and tail in one)."""
        self._check_split(start)
        self._check_split(stop)
        if stop < start:
            raise InvalidSplitError(f"{self.name}: block range [{start}, {stop}) is reversed")
        return self._run(x, start, stop)

    def inexact_splits(self, x: torch.Tensor) -> list[int]:
        """Splits k where tail(head(x, k), k) differs from forward(x): [] for a sound block list."""
        reference = self.forward(x)
        return [
            k
            for k in range(self.n + 1)
            if not torch.equal(self.tail(self.head(x, k), k), reference)
        ]

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        with torch.inference_mode():
            for index in range(start, stop):
                x = self.blocks[index](x)
        return x

    # -- shapes and metadata --------------------------------------------------------------

    def block_output_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample output shape of every block at the model's input size (one dry run)."""
        if self._block_shapes is None:
            size = self.input_size
            x = torch.zeros(1, 3, size, size)
            shapes = []
            with torch.inference_mode():
                for block in self.blocks:
                    x = block(x)
                    shapes.append(tuple(int(d) for d in x.shape[1:]))
            self._block_shapes = tuple(shapes)
        return self._block_shapes

    def split_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-sample shape sent at each split: (S, S, 3) at 0, block k-1's output, () at n."""
        size = self.input_size
        inner = self.block_output_shapes()[:-1]
        return ((size, size, 3), *inner, ())

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.block_output_shapes()[-1]))

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = labels_for(self.num_classes, self._given_labels)
        return self._labels

    def model_info(self) -> ModelInfo:
        from schemas.frame import ModelInfo  # the wire contract is only needed by runtimes

        return ModelInfo(
            name=self.name, fingerprint=self.fingerprint, split_shapes=self.split_shapes()
        )

    # -- validation -----------------------------------------------------------------------

    def _check_split(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= self.n:
            raise InvalidSplitError(f"{self.name} has splits 0..{self.n}, got {k!r}")

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise InvalidInputError(
                f"{self.name} takes a float tensor (B, 3, H, W), got {_describe(x)}"
            )
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidInputError(
                f"{self.name} takes a float tensor (B, 3, H, W), got shape {tuple(x.shape)}"
            )

    def _check_intermediate(self, z: torch.Tensor, k: int) -> None:
        expected = self.block_output_shapes()[k - 1]  # at k = n: the logits, passed through
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise InvalidInputError(
                f"{self.name} split {k} takes a float tensor (B, *{expected}), got {_describe(z)}"
            )
        # Spatial sizes may differ from the nominal input size (convnets take any size), but
        # the rank and the channel (or token) count must match.
        if z.ndim != len(expected) + 1 or (expected and z.shape[1] != expected[0]):
            raise InvalidInputError(
                f"{self.name} split {k} takes (B, *{expected}), got shape {tuple(z.shape)}"
            )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
