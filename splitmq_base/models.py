"""The one strictness every validated model of splitmq shares (pydantic only, no YAML).

Unknown keys are refused, models are immutable, and types are not coerced: YAML's `true` is not
the integer 1, `1` is not a boolean and "8" is not a number. A field whose natural form is
another type relaxes it alone (`Field(strict=False)`): paths (strings), tuples (lists).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class StrictModel(BaseModel):
    """A pydantic model under `STRICT`."""

    model_config = STRICT
