"""Class names: ImageNet's 1000 categories ship with torchvision's weights metadata (offline)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from splitting.errors import ModelRegistrationError

IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the standard index order."""
    from torchvision.models import ResNet18_Weights  # type: ignore[import-untyped]

    categories: list[str] = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    return tuple(categories)


def labels_for(num_classes: int, given: Sequence[str] | None = None) -> list[str]:
    """`given` when supplied (it must name every class), else ImageNet's or `class_<i>`."""
    if given is not None:
        if len(given) != num_classes:
            raise ModelRegistrationError(
                f"{len(given)} labels given for a model with {num_classes} outputs"
            )
        return list(given)
    if num_classes == IMAGENET_CLASSES:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]
