"""An exported build's blocks on OpenVINO's CPU plugin, for `splitmq bench backends` only.

It reads the same block files and manifest as `splitting.onnx_blocks.OnnxBlocks` and refuses
a build that is not the expected one the same way (fingerprint, then every file's sha256). No
node runs on it: OpenVINO was measured against ONNX Runtime and was not faster at float32
(BENCHMARKS.md, "Backends").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splitmq.reports import package_version
from splitting.errors import MissingExtraError
from splitting.onnx_blocks import BuildMismatchError, read_manifest, sha256_of


def openvino_module() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise MissingExtraError(
            "timing OpenVINO needs openvino: pip install 'splitmq[openvino]'"
        ) from exc
    return openvino


def openvino_installed() -> bool:
    try:
        openvino_module()
    except MissingExtraError:
        return False
    return True


def default_precision() -> str:
    """The float type the CPU plugin computes in when not told: bf16 where the CPU has it."""
    hint = openvino_module().Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return str(hint.get_type_name())


class OpenVinoChain:
    """One compiled model per block on the CPU: one inference thread, the latency hint."""

    def __init__(self, directory: Path, *, expected_fingerprint: str, precision: str) -> None:
        ov = openvino_module()
        self.manifest = read_manifest(directory)
        if self.manifest.fingerprint != expected_fingerprint:
            raise BuildMismatchError(
                f"{directory} is build {self.manifest.fingerprint}, not {expected_fingerprint}"
            )
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self._requests = []
        for entry in self.manifest.blocks:
            path = directory / entry.name
            if sha256_of(path) != entry.sha256:
                raise BuildMismatchError(f"{path} is not the file the manifest names")
            compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
            self._requests.append(compiled.create_infer_request())
        # What the plugin settled on, which a report records beside the figures.
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        self.version = package_version("openvino") or str(ov.__version__)

    @property
    def n(self) -> int:
        return self.manifest.n

    def run_blocks(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        for request in self._requests[start:stop]:
            # The output tensor is reused by the next call on the same request: copy it out.
            x = np.array(request.infer([np.ascontiguousarray(x, dtype=np.float32)])[0])
        return x
