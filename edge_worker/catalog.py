"""The retained model catalog a worker publishes: what a client needs to build valid frames.

Built from the runner's `ModelInfo` (fingerprint, per-split shapes) and the decoder's own rules
(which codecs each split admits), so the catalog cannot promise what the worker refuses.
"""

from __future__ import annotations

import logging

from edge_worker.runner import TailRunner, accepted_codecs, split_dtype
from schemas.errors import MessageError
from schemas.frame import ModelInfo
from schemas.messages import ModelCatalogMessage, PrepareRecipe, SplitSpec, encode_message
from splitting.pixels import CROP_FRACTION, RECIPE_VERSION, resize_target

LOG = logging.getLogger(__name__)


def model_catalog(info: ModelInfo) -> ModelCatalogMessage:
    """The catalog of one model: every split 0..n-1 (which worker serves which is telemetry).

    Raises `MessageError` when split 0 is not a square RGB image (no prepare recipe fits)."""
    image = info.split_shapes[0]
    if len(image) != 3 or image[0] != image[1] or image[2] != 3:
        raise MessageError(f"{info.name}: split 0 shape {image} is not an (S, S, 3) image")
    try:
        return ModelCatalogMessage(
            model=info.name,
            fingerprint=info.fingerprint,
            n=info.n,
            splits=[
                SplitSpec(
                    split=k,
                    shape=list(info.split_shapes[k]),
                    dtype=split_dtype(k),
                    codecs=accepted_codecs(k),
                )
                for k in range(info.n)
            ],
            prepare=PrepareRecipe(
                size=image[0],
                crop_fraction=CROP_FRACTION,
                recipe_version=RECIPE_VERSION,
                resize_to=resize_target(image[0]),
            ),
        )
    except ValueError as exc:  # pydantic's ValidationError: a bound the wire cannot carry
        raise MessageError(f"{info.name}: no catalog: {exc}") from None


def catalog_payloads(runner: TailRunner) -> dict[str, bytes]:
    """model -> encoded catalog, for each model the runner serves that a catalog can describe
    (a test model without an image split is skipped, logged)."""
    infos = runner.model_infos()
    payloads = {}
    for name in runner.served():
        try:
            payloads[name] = encode_message(model_catalog(infos[name]))
        except MessageError as exc:
            LOG.warning("no catalog published: %s", exc)
    return payloads
