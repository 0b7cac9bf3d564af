"""A split model run by ONNX Runtime from an exported build: no torch in this module.

`splitmq export` (splitting.onnx_export) writes one directory per model build:

    <model>-<fingerprint>/
        manifest.json     what a runtime needs: blocks, input size, normalisation, shapes,
                          labels, and the sha256 of every block file
        block_00.onnx ... one graph per block, cut from one exported graph of the whole model

Block k maps the split-k tensor to the split-(k+1) tensor, so head(k) is blocks [0, k), tail(k)
blocks [k, n), and a race runs the tail one block at a time. Chaining per-block sessions cost
no more than one fused graph on lite0 (measured: 11.5 ms against 12.3 ms for the whole model),
and the device needs only onnxruntime and the block files, not the `onnx` package.

The fingerprint in the manifest and in every block's metadata is the PyTorch build's
(`splitting.partition.model_fingerprint`): a worker refuses a build whose fingerprint is not that
of the weights it loaded, and frames carry it, so two sides can never mix builds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, ValidationError

from splitmq_base.models import StrictModel
from splitting.errors import InvalidSplitError, MissingExtraError, ProfileError
from splitting.pixels import RECIPE_VERSION, normalize, prepare_image
from splitting.profiles import ModelProfile

if TYPE_CHECKING:
    from schemas.frame import ModelInfo

MANIFEST = "manifest.json"
PROFILE = "profile.json"
FORMAT_VERSION = 1
FINGERPRINT_KEY = "splitmq.fingerprint"
BLOCK_KEY = "splitmq.block"


class BuildMismatchError(ProfileError):
    """An exported build that is not the expected one: other weights, or a changed file."""


class BlockFile(StrictModel):
    name: str
    sha256: str


class ExportManifest(StrictModel):
    """What an exported build holds; written by the exporter, checked by every loader."""

    format: int = Field(FORMAT_VERSION, ge=1)
    model: str
    fingerprint: str
    block_names: tuple[str, ...] = Field(strict=False)
    input_size: int
    mean: tuple[float, float, float] = Field(strict=False)
    std: tuple[float, float, float] = Field(strict=False)
    split_shapes: list[list[int]]
    labels: tuple[str, ...] = Field(strict=False)
    blocks: tuple[BlockFile, ...] = Field(strict=False)
    exporter: dict[str, str]
    profile: BlockFile | None = Field(
        None, description="the build's profile: bytes and agreement per (split, codec)"
    )

    @property
    def n(self) -> int:
        return len(self.block_names)


def read_manifest(directory: Path) -> ExportManifest:
    path = directory / MANIFEST
    try:
        return ExportManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise ProfileError(f"{path}: not a readable splitmq export ({exc})") from exc


def build_dir_name(model: str, fingerprint: str) -> str:
    return f"{model}-{fingerprint}"


class MissingBuildError(ProfileError):
    """No exported build of the model where one was looked for, or no way to choose one."""


def default_export_dir() -> Path:
    """$SPLITMQ_CACHE_DIR/onnx, else $XDG_CACHE_HOME/splitmq/onnx, else ~/.cache/splitmq/onnx."""
    if os.environ.get("SPLITMQ_CACHE_DIR"):
        return Path(os.environ["SPLITMQ_CACHE_DIR"]) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitmq" / "onnx"


def find_build(export_dir: Path | None, model: str, fingerprint: str | None = None) -> Path:
    """The directory of `model`'s exported build in `export_dir`: the one with `fingerprint`,
    or the only one there."""
    root = export_dir if export_dir is not None else default_export_dir()
    builds = {
        path.parent.name.removeprefix(f"{model}-"): path.parent
        for path in sorted(root.glob(f"{model}-*/{MANIFEST}"))
    }
    if fingerprint is not None and fingerprint in builds:
        return builds[fingerprint]
    if fingerprint is None and len(builds) == 1:
        return next(iter(builds.values()))
    if not builds:
        raise MissingBuildError(
            f"no exported build of {model} in {root}: run `splitmq export --model {model} "
            f"--out {root}` where torch is installed, and copy the directory here"
        )
    wanted = f"build {fingerprint} is not among" if fingerprint else "several builds:"
    raise MissingBuildError(
        f"{root} holds {model} {wanted} {', '.join(builds)}; set build: to one of them"
    )


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError(
            "the onnxruntime backend needs onnxruntime: pip install 'splitmq[onnx]'"
        ) from exc
    return onnxruntime


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OnnxBlocks:
    """The blocks of one exported build, each an ONNX Runtime session on the CPU.

    Arrays in and out are numpy: float32 (B, 3, S, S) at split 0, the split-k tensor after.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        directory: str | Path,
        *,
        expected_fingerprint: str | None = None,
        threads: int | None = 1,
        device: str = "cpu",
    ) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self._labels = list(self.manifest.labels)  # read per result: built once, not per call
        if expected_fingerprint is not None and self.manifest.fingerprint != expected_fingerprint:
            raise BuildMismatchError(
                f"{self.directory} is build {self.manifest.fingerprint} of "
                f"{self.manifest.model}, but the loaded weights are {expected_fingerprint}: "
                "export this build again (splitmq export)"
            )
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's own choice
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        self.providers = execution_providers(device)
        self._sessions = [self._session(ort, options, index) for index in range(self.n)]
        self.threads = threads

    @property
    def name(self) -> str:
        return self.manifest.model

    @property
    def version(self) -> str:
        return str(_ort().__version__)

    @property
    def block_names(self) -> list[str]:
        return list(self.manifest.block_names)

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def n(self) -> int:
        return self.manifest.n

    @property
    def input_size(self) -> int:
        return self.manifest.input_size

    @property
    def labels(self) -> list[str]:
        return self._labels

    def prepare_image(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.input_size)

    @property
    def prepare_recipe(self) -> int:
        return RECIPE_VERSION  # prepare_image is splitting.pixels'

    def build_profile(self) -> ModelProfile | None:
        """The profile measured on this build when it was exported (bytes and agreement are
        the build's own; its device times are the exporting host's); None if it has none."""
        entry = self.manifest.profile
        if entry is None:
            return None
        path = self._checked(entry)
        profile = ModelProfile.load(path)
        if (profile.fingerprint, profile.backend) != (self.fingerprint, self.backend):
            raise BuildMismatchError(f"{path} is not the profile of build {self.fingerprint}")
        return profile

    def model_info(self) -> ModelInfo:
        from schemas.frame import ModelInfo

        shapes = tuple(tuple(shape) for shape in self.manifest.split_shapes)
        return ModelInfo(name=self.name, fingerprint=self.fingerprint, split_shapes=shapes)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Prepared uint8 (S, S, 3) or (B, S, S, 3) images -> float32 (B, 3, S, S)."""
        return normalize(images, self.manifest.mean, self.manifest.std, self.input_size, self.name)

    def top(self, logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return softmax_top(logits, k)

    def run_blocks(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Blocks [start, stop) on a batch of split-`start` tensors."""
        self._check_range(start, stop)
        for index in range(start, stop):
            session, input_name = self._sessions[index]
            x = session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return x

    def head(self, x: np.ndarray, k: int) -> np.ndarray:
        return self.run_blocks(x, 0, k)

    def tail(self, z: np.ndarray, k: int) -> np.ndarray:
        return self.run_blocks(z, k, self.n)

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n:
            raise InvalidSplitError(
                f"{self.name}: block range [{start}, {stop}) is outside 0..{self.n}"
            )

    def _checked(self, entry: BlockFile) -> Path:
        path = self.directory / entry.name
        if not path.is_file() or sha256_of(path) != entry.sha256:
            raise BuildMismatchError(f"{path} is missing or is not the file the manifest names")
        return path

    def _session(self, ort: Any, options: Any, index: int) -> tuple[Any, str]:
        path = self._checked(self.manifest.blocks[index])
        session = ort.InferenceSession(str(path), options, providers=self.providers)
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get(FINGERPRINT_KEY) != self.fingerprint or meta.get(BLOCK_KEY) != str(index):
            raise BuildMismatchError(
                f"{path} says build {meta.get(FINGERPRINT_KEY)!r} block {meta.get(BLOCK_KEY)!r},"
                f" the manifest build {self.fingerprint} block {index}"
            )
        return session, session.get_inputs()[0].name


def execution_providers(device: str) -> list[Any]:
    """ONNX Runtime's providers for a torch-style device name ("cpu", "cuda", "cuda:1"). A GPU
    needs the onnxruntime-gpu build (it replaces onnxruntime: the two share one module)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    available = _ort().get_available_providers()
    if kind != "cuda" or "CUDAExecutionProvider" not in available:
        raise MissingExtraError(
            f"device {device!r} with onnxruntime needs its CUDAExecutionProvider (install "
            f"onnxruntime-gpu in place of onnxruntime); this onnxruntime has {available}"
        )
    # The CPU provider takes any node the CUDA one cannot run.
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def softmax_top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (B, C) logits: the k highest probabilities and their class indices."""
    flat = logits.reshape(logits.shape[0], -1).astype(np.float64)
    shifted = np.exp(flat - flat.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(probabilities, order, axis=1), order
