"""`splitmq config example ROLE`: an example config with every key and its real default,
generated from the models; `splitmq config check FILE`: validate a config without running it.

    splitmq config example device > device.yaml
    splitmq config check device.yaml             # the role from the keys, or --role
    # device.yaml: policy.splt: unknown key (did you mean 'split'?)      (exit code 2)

`check` reads and validates, nothing more: no broker, no model loaded (a model name is checked
against the registry's names).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from splitmq_base.cli import EXIT_CONFIG, EXIT_OK
from splitmq_base.configfile import read_yaml_mapping
from splitmq_base.errors import ConfigurationError, SplitmqError
from splitmq_base.validation import did_you_mean, validation_errors

ROLES = ("device", "worker", "monitor")


class ConfigCheckError(ConfigurationError):
    """The file cannot be read, is no YAML mapping, or its role cannot be told."""


@dataclass(frozen=True)
class Role:
    """One kind of config file: its model, an instance of its defaults and its example's text."""

    name: str
    model: type[BaseModel]
    defaults: BaseModel
    header: tuple[str, ...]
    notes: dict[str, str]
    models_used: Callable[[BaseModel], list[tuple[str, str]]]  # (key path, model name)


_GENERATED = "every key with its default\n# (from {model}: `splitmq config example {role}`)"
_TLS = (
    "(or {ca_certs: CA file, certfile: client cert, keyfile: its key, insecure: false}: "
    "TLS; flags --tls-ca/--tls-cert/--tls-key)"
)


def _header(kind: str, model: str, role: str, run: str) -> tuple[str, ...]:
    return (
        f"# splitmq {kind}: " + _GENERATED.format(model=model, role=role),
        f"# Run: {run}. Check: splitmq config check FILE",
        "",
    )


def _roles() -> dict[str, Role]:
    return {role.name: role for role in (_device_role(), _worker_role(), _monitor_role())}


def _device_role() -> Role:
    # Imported here: the device's and the worker's configs import torch through their packages.
    from device_node.config import DeviceConfig

    def device_models(config: BaseModel) -> list[tuple[str, str]]:
        assert isinstance(config, DeviceConfig)
        return [("model", config.model)]

    notes = {
        "device_id": "(required: no default)",
        "broker.tls": _TLS,
        "policy.kind": "dynamic (the latency-model chooser), fixed, or a registered kind",
    }
    header = _header(
        "device node", "device_node.config.DeviceConfig", "device", "device-node --config FILE"
    )
    return Role(
        "device", DeviceConfig, DeviceConfig(device_id="camera-1"), header, notes, device_models
    )


def _worker_role() -> Role:
    from edge_worker.config import WorkerConfig

    def worker_models(config: BaseModel) -> list[tuple[str, str]]:
        assert isinstance(config, WorkerConfig)
        return [(f"models.{i}.name", entry.name) for i, entry in enumerate(config.models)]

    notes = {"worker_id": "(default when absent: worker-<host name>-<pid>)", "broker.tls": _TLS}
    header = _header(
        "edge worker", "edge_worker.config.WorkerConfig", "worker", "edge-worker --config FILE"
    )
    return Role(
        "worker", WorkerConfig, WorkerConfig(worker_id="worker-1"), header, notes, worker_models
    )


def _monitor_role() -> Role:
    from mqtt_session.options import ClientConfig

    header = _header(
        "monitor/exporter/homeassistant",
        "mqtt_session.options.ClientConfig",
        "monitor",
        "splitmq monitor --config FILE",
    )
    return Role("monitor", ClientConfig, ClientConfig(), header, {"broker.tls": _TLS}, _no_models)


def _no_models(config: BaseModel) -> list[tuple[str, str]]:
    return []


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="print an example config, or check one",
        description="Example configs generated from the models, and a check of a config file "
        "that loads no model and connects to nothing.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    example = actions.add_parser(
        "example", help="print an example config: every key with its real default"
    )
    example.add_argument("role", choices=ROLES, help="which program's config")
    example.set_defaults(func=run_example)
    check = actions.add_parser(
        "check", help="validate a config file: one line per error, exit code 2 if any"
    )
    check.add_argument("file", type=Path, metavar="FILE", help="the YAML file")
    check.add_argument(
        "--role", choices=ROLES, help="the file's program (default: told from its keys)"
    )
    check.set_defaults(func=run_check)


def run_example(args: argparse.Namespace) -> int:
    from splitmq_base.configdoc import example_yaml

    role = _roles()[args.role]
    sys.stdout.write(example_yaml(role.defaults, header=role.header, notes=role.notes))
    return EXIT_OK


def detect_role(data: dict[str, Any], roles: dict[str, Role], source: str) -> Role:
    """The role whose own keys (those no other role has) the file uses; exactly one must."""
    fields = {name: set(role.model.model_fields) for name, role in roles.items()}
    hits = {}
    for name, own in fields.items():
        others = set().union(*(keys for other, keys in fields.items() if other != name))
        used = set(data) & (own - others)
        if used:
            hits[name] = used
    if len(hits) == 1:
        return roles[next(iter(hits))]
    found = "; ".join(f"{name}: {', '.join(sorted(keys))}" for name, keys in sorted(hits.items()))
    why = f"it has keys of several ({found})" if hits else "none of their own keys is set"
    raise ConfigCheckError(
        f"{source}: cannot tell a device, worker or monitor config apart ({why}); "
        "pass --role device|worker|monitor"
    )


def check_file(path: Path, role_name: str | None = None) -> tuple[str, list[str]]:
    """The role checked and one line per problem (`FILE: key: message`); none = valid."""
    data = read_yaml_mapping(path, what="config", error=ConfigCheckError)
    roles = _roles()
    role = roles[role_name] if role_name else detect_role(data, roles, str(path))
    try:
        config = role.model.model_validate(data)
    except ValidationError as exc:
        found = validation_errors(exc, data=data, model=role.model)
        return role.name, [f"{path}: {key}: {message}" for key, message in found]
    except SplitmqError as exc:  # a validator's own error (a topic level with '/')
        return role.name, [f"{path}: {exc}"]
    return role.name, _unknown_models(path, role, config)


def _unknown_models(path: Path, role: Role, config: BaseModel) -> list[str]:
    """Model names the registry does not know (its names only: nothing is built), and model
    files that are not there."""
    from splitting.model_files import is_model_file, split_factory
    from splitting.registry import available_models

    known = available_models()
    problems = []
    for key, name in role.models_used(config):
        if is_model_file(name):
            if not Path(split_factory(name)[0]).exists():
                problems.append(
                    f"{path}: {key}: model file {split_factory(name)[0]} does not exist"
                )
        elif name not in known:
            problems.append(
                f"{path}: {key}: unknown model {name!r}{did_you_mean(name, known)}; "
                f"registered: {', '.join(known)}"
            )
    return problems


def run_check(args: argparse.Namespace) -> int:
    role, problems = check_file(args.file, args.role)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    if not args.quiet:
        print(f"{args.file}: a valid {role} config")
    return EXIT_OK
