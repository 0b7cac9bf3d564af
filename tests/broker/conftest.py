"""Fixtures of the broker tests (the plain broker fixtures live in tests/conftest.py)."""

from __future__ import annotations

from tests.support.secure_site import site  # noqa: F401  (a broker from `broker init`)
