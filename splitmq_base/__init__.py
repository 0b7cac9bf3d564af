"""The base of the house: what every splitmq package builds on, importing none of them.

- `errors`: the one error root (`SplitmqError`) and `ConfigurationError`;
- `configfile`: YAML files validated into strict pydantic models (`StrictModel`), with one
  report of every bad key;
- `cli`: what every entry point shares, and the table from errors to exit codes;
- `__version__`.

Packages import downward only: `splitmq_base` <- `schemas` <- `splitting`, `mqtt_session` <-
`device_node`, `edge_worker`, `broker` <- `splitmq` (the application). tests/test_layering.py
enforces it.
"""

__version__ = "0.1.0"
