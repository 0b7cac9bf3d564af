"""The `splitmq-prepare` user property as the worker's link reads it off the wire: the first
one counts, its value is cut short, and anything malformed reads as absent."""

from __future__ import annotations

from edge_worker.link import _prepare_version
from schemas.topics import EXACT_PROPERTY, PREPARE_PROPERTY


def test_the_first_prepare_property_names_the_version() -> None:
    properties = [EXACT_PROPERTY, (PREPARE_PROPERTY, "2"), (PREPARE_PROPERTY, "1")]
    assert _prepare_version(properties) == "2"


def test_a_request_without_it_or_with_junk_reads_as_absent() -> None:
    assert _prepare_version(None) is None
    assert _prepare_version([EXACT_PROPERTY]) is None
    assert _prepare_version("splitmq-prepare") is None
    assert _prepare_version([("splitmq-prepare",), ["splitmq-prepare", "2"]]) is None


def test_a_long_value_is_cut_short_and_names_no_version() -> None:
    version = _prepare_version([(PREPARE_PROPERTY, "9" * 10_000)])
    assert version == "9" * 32
