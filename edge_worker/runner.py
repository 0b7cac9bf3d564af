"""Tail runners: decode and validate frames, run tail(k) on a batch, return the top-5.

`ModelTailRunner` serves real split models (splitting.registry); `EchoTailRunner` decodes and
validates the same way but skips the model and answers a fixed top-5, so the transport
benchmark measures MQTT and framing only. The worker sees only the `TailRunner` protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from edge_worker.config import ModelEntry, WorkerConfig
from edge_worker.errors import (
    BadInputError,
    RunnerError,
    SplitNotServedError,
    TopicMismatchError,
)
from schemas.codecs import FLOAT_DTYPES, IMAGE_CODECS, REGISTRY
from schemas.frame import (
    Frame,
    FrameLimits,
    ModelInfo,
    decode_frame,
    decode_frame_unless,
    encode_frame,
)
from schemas.messages import Prediction
from splitting.errors import SplittingError
from splitting.onnx_blocks import OnnxBlocks, execution_providers, softmax_top
from splitting.partition import SplitModel
from splitting.profiles import natural_bottlenecks
from splitting.torch_blocks import torch_top

LOG = logging.getLogger(__name__)
TOP_K = 5
TAIL_FLOAT_MAX = float(np.finfo(np.float32).max)  # tails compute in fp32
Backend = Literal["torch", "onnxruntime", "echo"]


class TailRunner(Protocol):
    """What the worker needs from a tail runner."""

    @property
    def device(self) -> str:
        """Where tails run: "cpu", "cuda:0", ..."""
        ...

    def served(self) -> dict[str, list[int]]:
        """model -> the splits this runner serves (what the worker subscribes)."""
        ...

    def decode(self, payload: bytes, model: str, split: int) -> Frame:
        """Decode and validate one frame that arrived on the topic of (model, split).

        Raises a `schemas.errors.FrameError` or an `edge_worker.errors.RequestError`.
        """
        ...

    def decode_in_line(self, payload: bytes, model: str, split: int) -> Frame | None:
        """`decode` for a frame whose decoding is linear in its bytes and bounded by the frame
        limits (the tensor codecs), run on the caller's thread; None, with nothing decoded past
        the header, for an image codec (JPEG, WebP), which `decode` runs under a CPU budget."""
        ...

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        """tail(split) over the frames (same model and split), top-5 per frame, in order."""
        ...

    def run_exact(self, model: str, split: int, frame: Frame) -> list[Prediction]:
        """tail(split) of one frame on the bit-exact path (see `computes_exactly`)."""
        ...

    def backend_for(self, exact_path: bool) -> Backend:
        """The runtime that computes a batch on the exact path or off it."""
        ...

    def computes_exactly(self, batch_size: int, exact_path: bool) -> bool:
        """Whether a batch of `batch_size` run so (`exact_path`: as asked for) gives logits
        bit-identical to the unsplit model's reference run (batch 1, one torch thread, CPU)."""
        ...

    def warm_up(self) -> list[tuple[str, int]]:
        """Pay one-time costs (kernel selection, allocations) before the first request, at
        batch 1 on both paths; returns the (model, split) pairs it warmed."""
        ...

    def model_infos(self) -> dict[str, ModelInfo]:
        """model -> what its frames are checked against (fingerprint, per-split shapes)."""
        ...


class _DecodingRunner:
    """Frame decoding and validation shared by every runner."""

    def __init__(
        self,
        catalog: Mapping[str, ModelInfo],
        served: Mapping[str, Sequence[int]],
        limits: FrameLimits,
    ) -> None:
        self._catalog = dict(catalog)
        self._served = {model: sorted(splits) for model, splits in served.items()}
        self._limits = limits

    def served(self) -> dict[str, list[int]]:
        return {model: list(splits) for model, splits in self._served.items()}

    def model_infos(self) -> dict[str, ModelInfo]:
        return dict(self._catalog)

    def decode(self, payload: bytes, model: str, split: int) -> Frame:
        return self._checked(
            decode_frame(payload, limits=self._limits, catalog=self._catalog), model, split
        )

    def decode_in_line(self, payload: bytes, model: str, split: int) -> Frame | None:
        frame = decode_frame_unless(
            payload, IMAGE_CODECS, limits=self._limits, catalog=self._catalog
        )
        return None if frame is None else self._checked(frame, model, split)

    def _checked(self, frame: Frame, model: str, split: int) -> Frame:
        header = frame.header
        if (header.model, header.split) != (model, split):
            raise TopicMismatchError(
                f"frame is for {header.model} split {header.split} but came on the request "
                f"topic of {model} split {split}"
            )
        if split not in self._served.get(model, ()):
            raise SplitNotServedError(
                f"this worker serves {model} at splits {self._served.get(model, [])}, not {split}"
            )
        _check_dtype(frame)
        return frame


class ModelTailRunner(_DecodingRunner):
    """Runs tail(k) of real split models on CPU or CUDA (fp32): batches on `backend`, exact
    requests always on PyTorch, the reference."""

    def __init__(
        self,
        models: Mapping[str, SplitModel],
        served: Mapping[str, Sequence[int]],
        *,
        device: str = "cpu",
        limits: FrameLimits | None = None,
        backend: Literal["torch", "onnxruntime"] = "torch",
        export_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        for name, splits in served.items():
            if name not in models:
                raise RunnerError(f"splits given for {name!r}, which is not loaded")
            bad = [k for k in splits if not 0 <= k < models[name].n]
            if bad:
                raise RunnerError(
                    f"{name} has splits 0..{models[name].n - 1} to serve (split "
                    f"{models[name].n} runs on the device); got {bad}"
                )
        if backend == "onnxruntime":
            try:  # before any module moves to a device ONNX Runtime may not reach
                execution_providers(device)
            except SplittingError as exc:
                raise RunnerError(str(exc)) from exc
        # model_info() runs one dry pass on the CPU and caches the block shapes that tail()'s
        # input check uses, so it must happen before the blocks move to another device.
        catalog = {name: model.model_info() for name, model in models.items()}
        super().__init__(catalog, served, limits or FrameLimits())
        self._device = torch.device(device)
        self._models = dict(models)
        for model in self._models.values():
            model.module.to(self._device)
        self.backend = backend
        self._exported = (
            self._load_exported(export_dir, threads) if backend == "onnxruntime" else {}
        )

    def _load_exported(self, export_dir: Path | None, threads: int | None) -> dict[str, OnnxBlocks]:
        """Each model's exported build, exported now where this fingerprint has none."""
        from splitting.onnx_export import ensure_exported

        try:
            return {
                name: OnnxBlocks(
                    ensure_exported(model, export_dir),
                    expected_fingerprint=model.fingerprint,
                    threads=threads,
                    device=str(self._device),
                )
                for name, model in self._models.items()
            }
        except SplittingError as exc:
            raise RunnerError(f"cannot load the onnxruntime backend: {exc}") from exc

    @classmethod
    def from_config(cls, config: WorkerConfig) -> ModelTailRunner:
        """Load every configured model (no download) and resolve its split selection."""
        from splitting.registry import load_model

        device = resolve_device(config.device)
        models: dict[str, SplitModel] = {}
        served: dict[str, list[int]] = {}
        for entry in config.models:
            try:
                model = load_model(entry.name, weights=entry.weights)
            except SplittingError as exc:
                raise RunnerError(f"cannot load model {entry.name!r}: {exc}") from exc
            models[model.name] = model  # a model file's wire name, not its path
            served[model.name] = resolve_splits(model, entry)
        return cls(
            models,
            served,
            device=device,
            limits=config.frame_limits.limits(),
            backend=config.backend,
            export_dir=config.export_dir,
            threads=config.torch_threads,
        )

    @property
    def device(self) -> str:
        if self._device.type == "cuda":
            return f"cuda:{self._device.index or 0}"
        return str(self._device)

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        return self._run(model, split, [frame.tensor for frame in frames], exact=False)

    def run_exact(self, model: str, split: int, frame: Frame) -> list[Prediction]:
        return self._run(model, split, [frame.tensor], exact=True)[0]

    def _run(
        self, model: str, split: int, tensors: Sequence[np.ndarray], *, exact: bool
    ) -> list[list[Prediction]]:
        if not exact and model in self._exported:
            return self._run_exported(self._exported[model], split, tensors)
        split_model = self._models[model]
        batch = self._to_batch(split_model, split, tensors)
        threads = _one_thread() if exact and self._device.type == "cpu" else nullcontext()
        with threads, torch.inference_mode():
            logits = split_model.tail(batch.to(self._device), split)
            scores, indices = torch_top(logits, TOP_K)
        return top5_predictions(scores, indices, split_model.labels)

    @staticmethod
    def _run_exported(
        blocks: OnnxBlocks, split: int, tensors: Sequence[np.ndarray]
    ) -> list[list[Prediction]]:
        stacked = np.stack(tensors)
        batch = blocks.preprocess(stacked) if split == 0 else stacked.astype(np.float32, copy=False)
        scores, indices = softmax_top(blocks.tail(batch, split), TOP_K)
        return top5_predictions(scores, indices, blocks.labels)

    def backend_for(self, exact_path: bool) -> Backend:
        return "torch" if exact_path else self.backend

    def computes_exactly(self, batch_size: int, exact_path: bool) -> bool:
        # Batched kernels, other thread counts, GPU kernels and other runtimes may sum in
        # another order.
        torch_one_thread = self.backend == "torch" and torch.get_num_threads() == 1
        return self._device.type == "cpu" and batch_size == 1 and (exact_path or torch_one_thread)

    def warm_up(self) -> list[tuple[str, int]]:
        """One tail call at every served split, batched and exact: a first call costs up to a
        second or more of one-time setup on CPU (1.5-1.75 s measured for a split the old
        warm-up skipped), which must land neither on a real request nor in the advertised
        service time."""
        warmed = []
        for name, splits in self._served.items():
            infos = self._catalog[name]
            for split in splits:
                shape = infos.split_shapes[split]
                dtype = np.uint8 if split == 0 else np.float32
                blank = np.zeros(shape, dtype=dtype)
                self._run(name, split, [blank], exact=False)
                self._run(name, split, [blank], exact=True)
                warmed.append((name, split))
        return warmed

    @staticmethod
    def _to_batch(model: SplitModel, split: int, tensors: Sequence[np.ndarray]) -> torch.Tensor:
        stacked = np.stack(tensors)
        if split == 0:
            return model.preprocess(stacked)
        return torch.from_numpy(stacked.astype(np.float32, copy=False))


class EchoTailRunner(_DecodingRunner):
    """Decodes and validates like the real runner, then answers a fixed top-5 (no model)."""

    def __init__(
        self,
        infos: Sequence[ModelInfo],
        *,
        limits: FrameLimits | None = None,
        served: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        catalog = {info.name: info for info in infos}
        every = {info.name: list(range(info.n)) for info in infos}
        super().__init__(catalog, served if served is not None else every, limits or FrameLimits())

    @property
    def device(self) -> str:
        return "cpu"

    def run_batch(self, model: str, split: int, frames: Sequence[Frame]) -> list[list[Prediction]]:
        return [list(ECHO_TOP5) for _ in frames]

    def run_exact(self, model: str, split: int, frame: Frame) -> list[Prediction]:
        return self.run_batch(model, split, [frame])[0]

    def backend_for(self, exact_path: bool) -> Backend:
        return "echo"

    def computes_exactly(self, batch_size: int, exact_path: bool) -> bool:
        return batch_size == 1  # a fixed answer, the same in any batch; exact when alone

    def warm_up(self) -> list[tuple[str, int]]:
        """Nothing to warm (no model): every split is as fast on its first call as later."""
        return [(model, split) for model, splits in self._served.items() for split in splits]


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch at one intra-op thread for the duration (the compute thread is the only caller)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def split_dtype(split: int) -> str:
    """The dtype a head produces at `split`: the uint8 image at 0, float32 activations after."""
    return "uint8" if split == 0 else "float32"


def warm_up_frames(
    infos: Mapping[str, ModelInfo], served: Mapping[str, Sequence[int]]
) -> list[tuple[str, int, bytes]]:
    """(model, split, frame) of every codec a worker decodes, on a blank tensor: split 0's image
    codecs and one inner split's tensor codecs per model (a codec's setup is per process and
    thread, not per split)."""
    frames = []
    for name, splits in served.items():
        info = infos[name]
        inner = [s for s in splits if s > 0][:1]
        for split in [s for s in splits if s == 0][:1] + inner:
            dtype = np.uint8 if split == 0 else np.float32
            blank = np.zeros(info.split_shapes[split], dtype=dtype)
            for codec in accepted_codecs(split):
                frame = encode_frame(
                    blank,
                    codec=codec,
                    request_id="warm-up",
                    model=name,
                    fingerprint=info.fingerprint,
                    split=split,
                )
                frames.append((name, split, frame))
    return frames


def accepted_codecs(split: int) -> list[str]:
    """Codecs whose decoded dtype `_check_dtype` admits at `split` (the catalog states them)."""
    return [
        name
        for name, codec in REGISTRY.items()
        if ("uint8" in codec.decoded_dtypes if split == 0 else _floating(codec.decoded_dtypes))
    ]


def _floating(dtypes: Sequence[str]) -> bool:
    return any(dtype in FLOAT_DTYPES for dtype in dtypes)


def _check_dtype(frame: Frame) -> None:
    """Split 0 carries a uint8 image; later splits carry finite floating activations."""
    dtype, split = frame.tensor.dtype, frame.header.split
    if split == 0 and dtype != np.uint8:
        raise BadInputError(f"split 0 takes a uint8 image, the frame carries {dtype}")
    if split > 0 and not np.issubdtype(dtype, np.floating):
        raise BadInputError(f"split {split} takes a floating tensor, the frame carries {dtype}")
    if split > 0 and not np.isfinite(frame.tensor).all():
        # NaN/Inf would make this sample's scores NaN, which no reply can carry: refused here,
        # alone, instead of failing the whole batch it would join.
        raise BadInputError(f"split {split} tensor holds NaN or infinite values")
    if split > 0 and frame.tensor.size and np.abs(frame.tensor).max() > TAIL_FLOAT_MAX:
        # Tails run in fp32: a finite float64 like 1e300 would become inf there.
        raise BadInputError(
            f"split {split} tensor holds values beyond float32's range (+-{TAIL_FLOAT_MAX:.3g})"
        )


ECHO_TOP5 = tuple(
    Prediction(index=i, label=f"echo-{i}", score=score)
    for i, score in enumerate((0.5, 0.2, 0.15, 0.1, 0.05))
)


def echo_model_info(
    name: str = "echo", *, shapes: Sequence[tuple[int, ...]] = ((16, 16, 3), (64,))
) -> ModelInfo:
    """A model that exists only for the transport benchmark: tiny tensors at splits 0..n-1."""
    return ModelInfo(name=name, fingerprint="ec40" * 4, split_shapes=(*shapes, ()))


def top5_predictions(
    scores: np.ndarray, indices: np.ndarray, labels: Sequence[str]
) -> list[list[Prediction]]:
    """Per row: the top classes as Predictions (index, label, softmax score)."""
    return [
        [
            Prediction(index=int(index), label=labels[int(index)], score=float(score))
            for score, index in zip(row_scores, row_indices, strict=True)
        ]
        for row_scores, row_indices in zip(scores, indices, strict=True)
    ]


def resolve_device(choice: str) -> str:
    """ "auto" -> cuda when available, else cpu; "cuda" without a GPU is an error."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RunnerError('device "cuda" requested but torch sees no CUDA device')
    return choice


def resolve_splits(model: SplitModel, entry: ModelEntry) -> list[int]:
    """The splits a worker serves for one model entry (never split n: that runs locally)."""
    if entry.splits == "all":
        return list(range(model.n))
    if entry.splits == "candidates":
        return candidate_splits(model, entry.candidate_codec)
    bad = [k for k in entry.splits if not 0 <= k < model.n]
    if bad:
        raise RunnerError(
            f"{model.name} splits {bad} are out of range: a worker serves 0..{model.n - 1}"
        )
    return sorted(entry.splits)


def candidate_splits(model: SplitModel, codec: str) -> list[int]:
    """Natural bottlenecks of `model` under `codec`, measured on one real sample image.

    Bytes on the wire decide: split 0 sends the JPEG of the prepared image, split k the frame
    of block k-1's output under `codec`. Split n is left out (it never reaches a worker).
    """
    from splitting.images import sample_images

    _, image = sample_images()[0]
    prepared = model.prepare_image(image)
    outputs = model.head_outputs(model.preprocess(prepared), range(1, model.n))
    bytes_by_k = [_frame_bytes(model, prepared, "jpeg", 0)]
    bytes_by_k += [_frame_bytes(model, outputs[k][0].numpy(), codec, k) for k in range(1, model.n)]
    chosen = natural_bottlenecks([*bytes_by_k, 0])
    return [k for k in chosen if k < model.n]


def _frame_bytes(model: SplitModel, tensor: np.ndarray, codec: str, k: int) -> int:
    frame = encode_frame(
        tensor,
        codec=codec,
        request_id="probe",
        model=model.name,
        fingerprint=model.fingerprint,
        split=k,
    )
    return len(frame)
