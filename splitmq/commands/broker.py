"""`splitmq broker`: run the embedded Mosquitto in the foreground until Ctrl-C;
`splitmq broker init DIR`: write a secure profile (broker.secure_profile) to run it with.

SIGINT, SIGTERM and SIGHUP stop mosquitto and remove the temporary directory (exit 0). If
mosquitto exits on its own the command fails with its status and log tail (exit 3). If this
process is killed outright, mosquitto gets SIGTERM from the kernel (broker.launcher).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from broker.access import DEFAULT_SHARE_GROUP
from broker.launcher import MosquittoBroker
from broker.revocation import revoke_login
from broker.secure_profile import DEFAULT_TLS_PORT, PLUGIN_NAME, ProfileOptions, init_profile
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX
from schemas.frame import DEFAULT_MAX_FRAME_BYTES
from splitmq_base.cli import port_number, positive_int

POLL_S = 0.2


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "broker", help="run the embedded Mosquitto broker with the project's config"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        help="TCP port (default: a free one, never 1883, which a system broker may hold; the "
        "command prints the flags that connect to it)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--config",
        type=Path,
        help="config template with ${port} and ${bind_address} (default: broker/mosquitto.conf)",
    )
    parser.add_argument(
        "--max-frame-bytes",
        type=positive_int,
        default=DEFAULT_MAX_FRAME_BYTES,
        help="the site's frame limit: the broker refuses larger requests (message_size_limit; "
        "the workers' frame_limits.max_frame_bytes must equal it; default %(default)s)",
    )
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="action", metavar="{init}")
    init = actions.add_parser(
        "init",
        help="write a secure profile: CA and TLS certificates, users, ACLs, broker config",
        description="Write a secure broker profile into DIR: a private CA, the broker's TLS "
        "certificate, random passwords for each user, per-user ACLs (dynamic-security "
        "plugin: devices cannot read other devices' results, join the workers' share group, "
        "or publish status and telemetry of others), and a broker config to run with "
        "`splitmq broker --config DIR/mosquitto.conf`. Each node's login is its node id.",
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="directory to write the profile to")
    _add_init_users(init)
    _add_init_broker(init)


def _add_init_users(init: argparse.ArgumentParser) -> None:
    """`broker init`'s logins and their client certificates."""
    init.add_argument("--device", action="append", default=[], metavar="NAME", help="device login")
    init.add_argument("--worker", action="append", default=[], metavar="NAME", help="worker login")
    init.add_argument(
        "--monitor",
        action="append",
        default=[],
        metavar="NAME",
        help="read-only login; users/NAME.yaml is a `splitmq monitor/exporter --config` file",
    )
    init.add_argument(
        "--homeassistant",
        action="append",
        default=[],
        metavar="NAME",
        help="Home Assistant's login: reads like a monitor, publishes its birth message and "
        "may clear discovery configs (`splitmq homeassistant remove --config users/NAME.yaml`)",
    )
    init.add_argument(
        "--bridge",
        action="append",
        default=[],
        metavar="NAME",
        help="an edge broker's login; bridges/NAME.conf is its bridge section to this core",
    )
    init.add_argument(
        "--core-address",
        metavar="HOST:PORT",
        help="where the edge brokers reach this core (default: the first --san and --port)",
    )
    init.add_argument(
        "--client-cert",
        action="append",
        default=[],
        metavar="NAME",
        help="also issue a TLS client certificate to this user (repeatable)",
    )
    init.add_argument(
        "--require-client-certs",
        action="store_true",
        help="the broker demands a client certificate (one is issued to every user)",
    )


def _add_init_broker(init: argparse.ArgumentParser) -> None:
    """`broker init`'s broker names, topic layout, client port and plugin."""
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name or address of the broker for its certificate (repeatable)",
    )
    init.add_argument("--topic-prefix", default="splitmq", help="first level(s) of every topic")
    init.add_argument("--share-group", default=DEFAULT_SHARE_GROUP, help="the workers' group")
    init.add_argument(
        "--discovery-prefix", default=DEFAULT_DISCOVERY_PREFIX, help="Home Assistant's prefix"
    )
    init.add_argument(
        "--port",
        dest="init_port",
        type=port_number,
        help=f"port written into each user's broker section (default {DEFAULT_TLS_PORT}); "
        "with --revoke, the running broker's port (default: the profile's)",
    )
    init.add_argument("--plugin", help=f"path of {PLUGIN_NAME} (default: searched)")
    init.add_argument(
        "--max-frame-bytes",
        dest="init_max_frame_bytes",
        type=positive_int,
        default=DEFAULT_MAX_FRAME_BYTES,
        help="the site's frame limit, written into the profile's config as message_size_limit "
        "(the workers' frame_limits.max_frame_bytes must equal it; default %(default)s)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing profile")
    init.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="NAME",
        help="instead of writing a profile: revoke this login of the profile in DIR on the "
        "running broker (at --host/--port, default the profile's), which kicks it, refuses it "
        "from then on and clears its retained status, telemetry and catalogs (repeatable)",
    )
    init.add_argument(
        "--host", dest="revoke_host", help="with --revoke: the running broker's address"
    )


def _stop_on_signals() -> threading.Event:
    """Set by SIGINT, SIGTERM or SIGHUP (a closed terminal), installed before mosquitto starts so
    a signal during start-up still cleans up."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)
    return stop


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        return run_init(args)
    stop = _stop_on_signals()
    broker = MosquittoBroker(
        args.port,
        host=args.host,
        config_template=args.config,
        max_frame_bytes=args.max_frame_bytes,
    )
    try:
        broker.start()
        print(
            f"broker running at {broker.url} (pid {broker.pid}, files in {broker.workdir}); "
            "Ctrl-C stops it",
            flush=True,
        )
        print(f"connect with: {connect_flags(broker.host, broker.port, args.config)}", flush=True)
        _follow_log(broker, stop)
    finally:
        broker.close()
    print("broker stopped", flush=True)
    return 0


def connect_flags(host: str, port: int, config: Path | None = None) -> str:
    """The connection flags of every command (device, worker, monitor, exporter, ...) that
    reach this broker, so a free port is no guess: `--host H --port P`, plus `--tls-ca` when
    the config is a TLS listener with a CA (`broker init`'s profile)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # bound everywhere: loopback reaches it from here
    flags = f"--host {host} --port {port}"
    ca = _config_cafile(config)
    if ca is not None:
        users = ca.parent / "users"
        flags += (
            f" --tls-ca {ca} --username NAME --password-file {users}/NAME.password"
            f" (or: --config {users}/NAME.yaml --port {port})"
        )
    return flags


def _config_cafile(config: Path | None) -> Path | None:
    """The `cafile` of a mosquitto config (a TLS listener), if it names one."""
    if config is None:
        return None
    try:
        lines = config.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None  # the launcher reports an unreadable config itself
    for line in lines:
        keyword, _, value = line.strip().partition(" ")
        if keyword == "cafile" and value.strip():
            return Path(value.strip())
    return None


def _follow_log(broker: MosquittoBroker, stop: threading.Event) -> None:
    """Echo the broker's log until a signal arrives; raise if mosquitto exits by itself."""
    shown = 0
    while not stop.is_set():
        text = broker.log_text()
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        broker.check_running()
        stop.wait(POLL_S)


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke logins of the profile in DIR on its running broker."""
    for name in args.revoke:
        report = revoke_login(
            args.dir,
            name,
            host=args.revoke_host,
            port=args.init_port,
            prefix=args.topic_prefix,
        )
        print(
            f"revoked {report.role} {report.name} in {report.seconds * 1000:.0f} ms "
            f"({', '.join(report.commands)}); retained state replaced: "
            f"{', '.join(report.cleared) or 'none'}; revocation list: {report.crl}"
        )
    return 0


def run_init(args: argparse.Namespace) -> int:
    """Write the profile; print where everything is and how to run it."""
    if args.revoke:
        return run_revoke(args)
    args.init_port = args.init_port or DEFAULT_TLS_PORT
    devices, workers, monitors = args.device, args.worker, args.monitor
    homeassistants, bridges = args.homeassistant, args.bridge
    if not (devices or workers or monitors or homeassistants or bridges):
        devices, workers, monitors = ["device-1"], ["worker-1"], ["monitor"]
    options = ProfileOptions(
        devices=devices,
        workers=workers,
        monitors=monitors,
        homeassistants=homeassistants,
        bridges=bridges,
        core_address=args.core_address,
        client_certs=args.client_cert,
        require_client_certs=args.require_client_certs,
        server_names=args.san,
        prefix=args.topic_prefix,
        share_group=args.share_group,
        discovery_prefix=args.discovery_prefix,
        port=args.init_port,
        plugin=args.plugin,
        force=args.force,
        max_frame_bytes=args.init_max_frame_bytes,
    )
    profile = init_profile(args.dir, options)
    print(f"secure broker profile written to {profile.directory}")
    for user in profile.users.values():
        cert = " (with client certificate)" if user.certfile else ""
        print(f"  {user.role:13} {user.name}: {profile.client_file(user.name)}{cert}")
    for name in bridges:
        print(f"  edge bridge {name}: {profile.directory / 'bridges' / f'{name}.conf'}")
    print(f"run it: splitmq broker --config {profile.config} --port {args.init_port}")
    print(f"keep {profile.directory / 'ca.key'} offline: it signs the broker's certificates")
    for warning in profile.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
