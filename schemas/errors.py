"""Errors of the wire contract.

Every error carries a stable `code` (a class attribute) that error replies put on the wire, so a
client can tell the problems apart without parsing messages.
"""

from splitmq_base.errors import ConfigurationError


class SchemaError(ConfigurationError):
    """Base of every error raised by `schemas`. Reaching a CLI it means bad input (a codec
    name, a topic prefix), hence the configuration exit code."""

    code = "schema_error"


class FrameError(SchemaError):
    """A binary tensor frame (or the tensor inside it) is not valid."""

    code = "bad_frame"


class TruncatedFrameError(FrameError):
    """The frame is shorter than its preamble or its declared sections."""

    code = "truncated"


class OversizedFrameError(FrameError):
    """The frame is longer than `FrameLimits.max_frame_bytes`."""

    code = "oversized"


class BadMagicError(FrameError):
    """The frame does not start with the magic bytes b"SMQF"."""

    code = "bad_magic"


class UnsupportedVersionError(FrameError):
    """The frame's format version is not one this decoder reads."""

    code = "unsupported_version"


class HeaderError(FrameError):
    """The JSON header is malformed: bad JSON, missing/unknown field, wrong type or value."""

    code = "bad_header"


class LengthMismatchError(FrameError):
    """Declared lengths disagree with each other or with the bytes present."""

    code = "length_mismatch"


class ShapeMismatchError(FrameError):
    """The tensor's shape disagrees with the model's split shape or with the payload."""

    code = "shape_mismatch"


class LimitExceededError(FrameError):
    """A declared size (header, tensor) is over the configured limit."""

    code = "limit_exceeded"


class UnknownCodecError(FrameError):
    """The codec named in the header (or asked of the encoder) does not exist."""

    code = "unknown_codec"


class UncataloguedModelError(FrameError):
    """The frame names a model that is not in the decoder's catalog (`ModelInfo`s)."""

    code = "unknown_model"


class UnknownSplitError(FrameError):
    """The frame's split index is outside [0, n) for its model."""

    code = "unknown_split"


class FingerprintMismatchError(FrameError):
    """The frame was produced by a different build of the model (weights or blocks differ)."""

    code = "fingerprint_mismatch"


class PayloadError(FrameError):
    """The payload's bytes are invalid: corrupt zstd, bad JPEG, non-finite quantization
    parameters, bool bytes other than 0/1, a non-zero int4 padding nibble."""

    code = "bad_payload"


class CodecError(SchemaError):
    """The encoder cannot represent this array with this codec (wrong dtype or shape,
    NaN/Inf under int8/int5/int4, fp16 overflow). Raised on the sending side only."""

    code = "bad_tensor"


class ModelInfoError(SchemaError, ValueError):
    """A catalog entry (`ModelInfo`) built with no split shapes (also a ValueError)."""

    code = "bad_model_info"


class MessageError(SchemaError):
    """A JSON message (result, telemetry, status) does not match its schema."""

    code = "bad_message"


class TopicError(SchemaError, ValueError):
    """A topic or topic segment is not valid for splitmq.

    Also a ValueError, so a pydantic validator that builds a topic from a config value reports
    the broken rule as that field's error without wrapping it."""

    code = "bad_topic"


ERROR_CLASSES: tuple[type[SchemaError], ...] = (
    SchemaError,
    FrameError,
    TruncatedFrameError,
    OversizedFrameError,
    BadMagicError,
    UnsupportedVersionError,
    HeaderError,
    LengthMismatchError,
    ShapeMismatchError,
    LimitExceededError,
    UnknownCodecError,
    UncataloguedModelError,
    UnknownSplitError,
    FingerprintMismatchError,
    PayloadError,
    CodecError,
    ModelInfoError,
    MessageError,
    TopicError,
)
