"""Your own model from a file: `--model path/to/net.py:factory`, a TorchScript file, or an
exported ONNX build directory, wherever a registered model name is accepted.

The contract (README "Your own model"):
- `net.py:factory`: `factory()` takes no argument and returns `(module, blocks)` or a
  `ModelSpec`. `blocks` is the ordered `[(name, block), ...]` list, or a callable taking the
  module and returning it (`splitting.zoo.feature_blocks`, `resnet_blocks`, ...).
- `net.pt` / `net.ts` / `net.torchscript` (`torch.jit.save`): its top-level children, in order,
  are the blocks (a scripted `nn.Sequential` is the plain case).
- a directory written by `splitmq export` (holding `manifest.json`): the build itself, for an
  onnxruntime device or `splitmq profile`.

The model's name on the wire (topics, frames, profiles) is the file's stem: `models/tiny.py:build`
and `models/tiny.pt` are both `tiny`; an exported build keeps its model's name. This module's
top half imports no torch, so configs can check a reference on a torch-free device.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitting.errors import ModelRegistrationError

if TYPE_CHECKING:
    from torch import nn

    from splitting.partition import SplitModel
    from splitting.spec import BlockList, ModelSpec

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
_MANIFEST = "manifest.json"  # splitting.onnx_blocks.MANIFEST, without importing onnxruntime
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Default weights of a file model: whatever its factory or file holds.
FILE_WEIGHTS = "file"


def is_model_file(ref: str) -> bool:
    """A `--model` value naming a file or build directory rather than a registered model."""
    if not isinstance(ref, str) or not ref:
        return False
    path, _ = split_factory(ref)
    return path.endswith(".py") or path.endswith(TORCHSCRIPT_SUFFIXES) or _is_build_dir(path)


def model_file_name(ref: str) -> str:
    """The wire name of a model file reference (its stem; an exported build's model name)."""
    path, _ = split_factory(ref)
    if _is_build_dir(path):
        return str(_manifest(Path(path)).get("model", ""))
    stem = _UNSAFE.sub("_", Path(path).stem).lstrip("._-")[:64]
    if not stem:
        raise ModelRegistrationError(f"{ref}: cannot make a model name from the file name")
    return stem


def wire_name(ref: str) -> str:
    """A registered name as it is; a file reference as its wire name."""
    return model_file_name(ref) if is_model_file(ref) else ref


def build_dir(ref: str) -> Path | None:
    """The exported build directory `ref` names, or None."""
    return Path(ref) if _is_build_dir(ref) else None


def split_factory(ref: str) -> tuple[str, str | None]:
    head, sep, tail = ref.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return head, tail
    return ref, None


def _is_build_dir(path: str) -> bool:
    return ("/" in path or Path(path).is_dir()) and (Path(path) / _MANIFEST).is_file()


def _manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / _MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelRegistrationError(f"{path}: unreadable {_MANIFEST}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelRegistrationError(f"{path}: {_MANIFEST} is not a JSON object")
    return data


# -- torch side: building the spec and checking its block list -------------------------------


def spec_from_file(ref: str) -> ModelSpec:
    """The `ModelSpec` of a `.py:factory` or TorchScript reference (named by `model_file_name`)."""
    path_text, factory_name = split_factory(ref)
    path = Path(path_text)
    if not path.is_file():
        raise ModelRegistrationError(f"model file {path} does not exist")
    name = model_file_name(ref)
    if path.suffix == ".py":
        if factory_name is None:
            raise ModelRegistrationError(
                f"{ref}: name the factory after a colon, e.g. {path}:build"
            )
        return _factory_spec(name, _load_factory(path, factory_name))
    return _torchscript_spec(name, path)


def _load_factory(path: Path, factory_name: str) -> Callable[[], Any]:
    module_name = f"splitmq_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelRegistrationError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: any error, named with its file
        raise ModelRegistrationError(f"{path} failed to import: {_one_line(exc)}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ModelRegistrationError(f"{path} has no callable {factory_name!r}")
    return factory


def _factory_spec(name: str, factory: Callable[[], Any]) -> ModelSpec:
    from torch import nn

    from splitting.spec import ModelSpec

    made: dict[int, Any] = {}

    def build() -> nn.Module:
        try:
            result = factory()
        except Exception as exc:  # the user's code
            raise ModelRegistrationError(f"{name}: the factory failed: {_one_line(exc)}") from exc
        if isinstance(result, ModelSpec):
            raise ModelRegistrationError(f"{name}: internal: a ModelSpec is built by its own build")
        if not (
            isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)
        ):
            raise ModelRegistrationError(
                f"{name}: the factory must return (module, blocks) or a ModelSpec,"
                f" got {type(result).__name__}"
            )
        made[id(result[0])] = result[1]
        return result[0]

    def blocks(module: nn.Module) -> BlockList:
        given = made.pop(id(module), None)
        listed = given(module) if callable(given) else given
        return list(listed or [])

    probe = factory()
    if isinstance(probe, ModelSpec):  # a full spec: its own build and blocks, our name
        return replace(probe, name=name)
    return ModelSpec(
        name=name,
        build=build,
        blocks=blocks,
        input_size=_input_size(probe[0] if isinstance(probe, tuple) and probe else None),
        default_weights=FILE_WEIGHTS,
        named_weights=_file_weights(name, build),
        description="a model from a Python factory",
    )


def _module_and_blocks(result: Any) -> bool:
    from torch import nn

    return isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)


def _torchscript_spec(name: str, path: Path) -> ModelSpec:
    import torch

    from splitting.spec import ModelSpec

    def build() -> nn.Module:
        try:
            with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it loads
                warnings.simplefilter("ignore", FutureWarning)
                module: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises runtime and zip errors alike
            raise ModelRegistrationError(
                f"{path} is not a TorchScript file: {_one_line(exc)}"
            ) from exc
        return module

    def blocks(module: nn.Module) -> BlockList:
        return list(module.named_children())

    return ModelSpec(
        name=name,
        build=build,
        blocks=blocks,
        input_size=_input_size(build()),
        default_weights=FILE_WEIGHTS,
        named_weights=_file_weights(name, build),
        description=f"TorchScript {path.name}",
    )


def _file_weights(name: str, build: Callable[[], nn.Module]) -> Callable[[str], nn.Module]:
    from splitting.errors import WeightsUnavailableError

    def named(choice: str) -> nn.Module:
        if choice != FILE_WEIGHTS:
            raise WeightsUnavailableError(
                f"{name} has the weights its file gives ({FILE_WEIGHTS!r}), 'random' or a"
                f" local state_dict file, not {choice!r}"
            )
        return build()

    return named


def _input_size(module: Any) -> int:
    for attribute in ("input_size", "image_size"):
        value = getattr(module, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 224


def check_exact(model: SplitModel) -> None:
    """Raise a one-line `ModelRegistrationError` naming the first split where running the
    blocks in order fails or stops reproducing the model's own forward."""
    import torch

    size = model.input_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        try:
            reference = model.module(x)
        except Exception as exc:  # the user's model
            raise ModelRegistrationError(
                f"{model.name}: the model itself fails on a (1, 3, {model.input_size},"
                f" {model.input_size}) input: {_one_line(exc)}"
            ) from exc
        z = x
        for index, block in enumerate(model.blocks):
            try:
                z = block(z)
            except Exception as exc:
                raise ModelRegistrationError(
                    f"{model.name}: the block list is not exact at split {index}: block"
                    f" {model.block_names[index]!r} cannot take the split-{index} tensor of"
                    f" shape {tuple(z.shape)}: {_one_line(exc)}"
                ) from exc
    if not (isinstance(reference, torch.Tensor) and torch.equal(z, reference)):
        raise ModelRegistrationError(
            f"{model.name}: split {model.n} is not exact: the {model.n} blocks in order do not"
            f" reproduce the model's forward (a block missing, repeated or out of order?)"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
