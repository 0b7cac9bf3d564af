"""The unsplit lite0 model's reference answers and lossless frames of its middle split."""

from __future__ import annotations

import numpy as np
import torch

from schemas.frame import encode_frame
from splitting.partition import SplitModel

SPLIT = 13


def reference_scores(model: SplitModel, prepared: np.ndarray) -> list[float]:
    """The unsplit model's top-5 softmax scores: batch 1, one thread (the reference run)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            logits = model.forward(model.preprocess(prepared))
            probabilities = torch.softmax(logits.float().flatten(1), dim=1)
            top = torch.topk(probabilities, k=5, dim=1)
    finally:
        torch.set_num_threads(previous)
    return [float(v) for v in top.values[0].numpy()]


def lossless_frame(model: SplitModel, prepared: np.ndarray, request_id: str) -> bytes:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the device's head, on the reference thread count
    try:
        with torch.inference_mode():
            z = model.head(model.preprocess(prepared), SPLIT)
    finally:
        torch.set_num_threads(previous)
    return encode_frame(
        z[0].numpy(),
        codec="lossless",
        request_id=request_id,
        model=model.name,
        fingerprint=model.fingerprint,
        split=SPLIT,
    )
