"""SplitModel: head/tail exactness for every split of every model, inputs and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splitting.errors import InvalidInputError, InvalidSplitError
from splitting.images import augmented_images
from splitting.partition import SplitModel
from splitting.pixels import IMAGENET_MEAN, IMAGENET_STD
from splitting.registry import available_models, load_model

torch.set_num_threads(min(2, torch.get_num_threads()))

# Architectures that only take their nominal input size; convnets run on small images.
FIXED_SIZE = {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "vit_b_16"}
SMALL_INPUT = 64


def _input_for(model: SplitModel, batch: int = 2) -> torch.Tensor:
    if model.name in FIXED_SIZE:
        return model.preprocess(augmented_images(batch, model.input_size, seed=7))
    return _normalised(augmented_images(batch, SMALL_INPUT, seed=7))


def _normalised(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.slow
@pytest.mark.parametrize("name", available_models())
def test_tail_of_head_equals_the_whole_model_bit_for_bit(name: str) -> None:
    model = load_model(name)
    x = _input_for(model)
    reference = model.forward(x)
    assert reference.shape == (2, 1000)
    for k in range(model.n + 1):
        z = model.head(x, k)
        assert torch.equal(model.tail(z, k), reference), f"{name}: split {k} differs"


@pytest.fixture(scope="module")
def resnet18() -> SplitModel:
    return load_model("resnet18")


def test_the_ends_pass_tensors_through(resnet18: SplitModel) -> None:
    x = _normalised(augmented_images(1, 64, seed=3))
    assert resnet18.head(x, 0) is x
    logits = resnet18.head(x, resnet18.n)
    assert resnet18.tail(logits, resnet18.n) is logits


def test_head_outputs_keep_the_requested_splits(resnet18: SplitModel) -> None:
    x = _normalised(augmented_images(2, 64, seed=4))
    kept = resnet18.head_outputs(x, [0, 3, 7])
    assert sorted(kept) == [0, 3, 7]
    for k, tensor in kept.items():
        assert torch.equal(tensor, resnet18.head(x, k))


def test_split_indices_outside_the_model_are_refused(resnet18: SplitModel) -> None:
    x = _normalised(augmented_images(1, 64, seed=5))
    for bad in (-1, resnet18.n + 1, 1.0, True):
        with pytest.raises(InvalidSplitError, match=r"splits 0\.\.11"):
            resnet18.head(x, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidSplitError):
            resnet18.tail(x, bad)  # type: ignore[arg-type]
    assert resnet18.head(x, np.int64(2)).shape == (1, 64, 16, 16)  # type: ignore[arg-type]


def test_inputs_of_the_wrong_kind_are_refused(resnet18: SplitModel) -> None:
    with pytest.raises(InvalidInputError, match="float tensor"):
        resnet18.head(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 1)
    with pytest.raises(InvalidInputError, match=r"got shape \(1, 1, 64, 64\)"):
        resnet18.forward(torch.zeros(1, 1, 64, 64))
    with pytest.raises(InvalidInputError, match="float tensor"):
        resnet18.forward(np.zeros((1, 3, 64, 64), dtype=np.float32))  # type: ignore[arg-type]
    # split 4 takes layer1's output: 64 channels, rank 4
    with pytest.raises(InvalidInputError, match=r"split 4 takes \(B, \*\(64, 56, 56\)\)"):
        resnet18.tail(torch.zeros(1, 128, 56, 56), 4)
    with pytest.raises(InvalidInputError, match="split 4"):
        resnet18.tail(torch.zeros(64, 56, 56), 4)


def test_preprocess_normalises_with_imagenet_statistics(resnet18: SplitModel) -> None:
    images = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    images[1] = 255
    x = resnet18.preprocess(images)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    for channel in range(3):
        black = -IMAGENET_MEAN[channel] / IMAGENET_STD[channel]
        white = (1 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(x[0, channel], torch.tensor(black))
        assert torch.allclose(x[1, channel], torch.tensor(white))
    assert resnet18.preprocess(images[0]).shape == (1, 3, 224, 224)


def test_preprocess_refuses_unprepared_images(resnet18: SplitModel) -> None:
    with pytest.raises(InvalidInputError, match="prepare_image"):
        resnet18.preprocess(np.zeros((100, 120, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        resnet18.preprocess(np.zeros((224, 224, 3), dtype=np.float32))


def test_prepare_image_resizes_and_center_crops(resnet18: SplitModel) -> None:
    wide = np.zeros((300, 600, 3), dtype=np.uint8)
    wide[:, 250:350] = 255  # a white band in the middle survives the center crop
    prepared = resnet18.prepare_image(wide)
    assert prepared.shape == (224, 224, 3) and prepared.dtype == np.uint8
    assert prepared[:, 112].min() == 255 and prepared[:, 0].max() == 0
    gray = resnet18.prepare_image(np.full((50, 40), 77, dtype=np.uint8))
    assert gray.shape == (224, 224, 3) and (gray == 77).all()
    rgba = resnet18.prepare_image(np.full((224, 224, 4), 9, dtype=np.uint8))
    assert (rgba == 9).all()
    with pytest.raises(InvalidInputError, match="HxW"):
        resnet18.prepare_image(np.zeros((10, 10, 2), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        resnet18.prepare_image(np.zeros((10, 10, 3)))


def test_model_info_describes_the_frames_a_worker_accepts(resnet18: SplitModel) -> None:
    from schemas.errors import FingerprintMismatchError, ShapeMismatchError
    from schemas.frame import decode_frame, encode_frame

    info = resnet18.model_info()
    assert info.name == "resnet18" and info.fingerprint == resnet18.fingerprint
    assert info.split_shapes == resnet18.split_shapes()
    catalog = {info.name: info}
    x = resnet18.preprocess(augmented_images(1, 224, seed=6))
    z = resnet18.head(x, 4)[0].numpy()

    def frame(tensor: np.ndarray, fingerprint: str) -> bytes:
        return encode_frame(
            tensor, codec="int8", request_id="r", model="resnet18", fingerprint=fingerprint, split=4
        )

    decoded = decode_frame(frame(z, resnet18.fingerprint), catalog=catalog)
    assert decoded.tensor.shape == z.shape
    with pytest.raises(FingerprintMismatchError):
        decode_frame(frame(z, "0" * 16), catalog=catalog)
    with pytest.raises(ShapeMismatchError):
        decode_frame(frame(z[:32], resnet18.fingerprint), catalog=catalog)
