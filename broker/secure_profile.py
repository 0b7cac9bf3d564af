"""`splitmq broker init DIR`: a broker profile that lets no client where it does not belong.

    options = ProfileOptions(devices=["cam-1"], workers=["w1"], monitors=["mon"])
    profile = init_profile(Path("site"), options)
    # splitmq broker --config site/mosquitto.conf --port 8883
    # each client: the `broker:` section in site/users/<name>.yaml

What it writes into DIR:

| file                      | what                                                        |
|---------------------------|-------------------------------------------------------------|
| `ca.crt`, `ca.key`        | a private CA (keep `ca.key` offline; it signs the others)   |
| `server.crt`/`server.key` | the broker's TLS certificate (SAN 127.0.0.1, localhost, +)  |
| `dynamic-security.json`   | users (PBKDF2-SHA512 hashed) and one role per user           |
| `mosquitto.conf`          | a launcher template (`${port}`, `${bind_address}`): TLS only |
| `users/<name>.yaml`       | that client's `broker:` section: login, password, TLS files  |
| `users/<name>.password`   | the same password alone, for `broker.password_file`          |
| `users/<name>.crt/.key`   | a client certificate, for the users that asked for one       |
| `crl.pem`                 | with `--require-client-certs`: the CA's revoked certificates |
| `splitmq_cert_login.so`   | with `--require-client-certs`: the certificate-login plugin  |
| `users/splitmq-control.*` | the profile's own control login, which `--revoke` uses       |
| `bridges/<name>.conf`     | an edge broker's bridge section to this core (`--bridge`)    |
| `bridges/ca.crt`, `.crt`/`.key` | the CA and, with client certs, the bridge's own pair   |

Why Mosquitto's dynamic-security plugin and not an `acl_file`: in Mosquitto 2.0 the ACL file
is never consulted for SUBSCRIBE (src/security_default.c returns success for every
subscription). So a device user could join the workers' `$share` group; the broker then routed
a share of the requests to it and dropped them at the delivery check (measured: 4 timeouts in
8 s). The plugin checks subscriptions, `$share/<group>/...` included as written, and refuses
them in the SUBACK. Mosquitto 2.0.11's plugin does not substitute `%u` in its ACLs, so each
user gets a role of its own with its name written out. `use_username_as_clientid` makes every
client id its login, so no one can take over (and kick) another client's session.

The identity rule this relies on: a node's login is its node id (`device_id`, `worker_id`), so
that its status, telemetry, catalog and result topics carry its login. With
`require_client_certs` a login needs the certificate of its own name and its password: the
certificate-login plugin (`broker.cert_login`, compiled into the profile) refuses any other
certificate before dynamic security checks the password, so one node's certificate cannot log
in as another node; a certificate from another CA fails the TLS handshake. Where the plugin
cannot be built, the certificate's common name is the login instead (`use_identity_as_username`,
no password asked), and the profile's warnings say so. Without `require_client_certs` the broker
requests no client certificate at all and the password is the identity.

Revoking a login on the running broker (`broker.revocation`, `splitmq broker init DIR --revoke
NAME`) goes through the plugin's `$CONTROL` topics with the control login.

The certificates need `cryptography` (the `broker` extra, `pip install 'splitmq[broker]'`),
loaded only when a profile is written (`broker.certificates`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from broker.access import DEFAULT_SHARE_GROUP, role_rules
from broker.bridge_config import BridgeSpec, parse_core_address, render_bridge
from broker.cert_login import CertLoginBuildError, build_cert_login_plugin
from broker.errors import BrokerExtraMissingError, SecureProfileError
from broker.launcher import DEFAULT_CONFIG, broker_account, size_limits
from broker.programs import find_program
from broker.revocation import CONTROL_USER, CRL_NAME
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX
from schemas.errors import TopicError
from schemas.frame import DEFAULT_MAX_FRAME_BYTES
from schemas.topics import Topics, check_segment
from splitmq_base.models import StrictModel

if TYPE_CHECKING:
    from broker.certificates import KeyAndCert

ProfileRole = Literal["device", "worker", "bridge", "monitor", "homeassistant", "control"]
DEFAULT_TLS_PORT = 8883
PLUGIN_NAME = "mosquitto_dynamic_security.so"
# Where distributions put the plugin (Debian/Ubuntu multiarch, Fedora, Homebrew, source builds).
PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib64/mosquitto",
    "/usr/lib/mosquitto",
    "/usr/local/lib",
    "/usr/local/lib/mosquitto",
    "/opt/homebrew/lib",
    "/usr/lib",
)
# PBKDF2-SHA512 as the plugin verifies it: 64-byte hash, 12-byte salt. 1,000 iterations cost
# well under a millisecond per login (mosquitto_ctrl's default is 101).
HASH_BYTES = 64
SALT_BYTES = 12
HASH_ITERATIONS = 1000
PASSWORD_BYTES = 24
# The tuning of the plain config, from its first section after the listener one, is copied.
TUNING_MARK = "# --- Latency"


@dataclass(frozen=True)
class ProfileUser:
    """One login of the profile: its role, its password and, if issued, its certificate."""

    name: str
    role: ProfileRole
    password: str
    certfile: Path | None = None
    keyfile: Path | None = None


@dataclass(frozen=True)
class SecureProfile:
    """What `init_profile` wrote."""

    directory: Path
    config: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    dynsec: Path
    users: dict[str, ProfileUser] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # With client certificates: the plugin that binds each certificate to its login (None: it
    # could not be built, and the certificate's name is the login instead).
    cert_login: Path | None = None

    def client_file(self, name: str) -> Path:
        return self.directory / "users" / f"{name}.yaml"

    def password_file(self, name: str) -> Path:
        return self.directory / "users" / f"{name}.password"


class ProfileOptions(StrictModel):
    """What `init_profile` writes: the logins of each role, the certificates, the topic layout
    the ACLs cover and where the clients find the broker."""

    devices: tuple[str, ...] = Field((), strict=False, description="device logins")
    workers: tuple[str, ...] = Field((), strict=False, description="worker logins")
    monitors: tuple[str, ...] = Field((), strict=False, description="read-only logins")
    homeassistants: tuple[str, ...] = Field(
        (),
        strict=False,
        description="logins of Home Assistant (read-only, plus its birth message and the "
        "discovery configs `splitmq homeassistant remove` clears)",
    )
    bridges: tuple[str, ...] = Field(
        (), strict=False, description="edge brokers' logins; each gets bridges/<name>.conf"
    )
    core_address: str | None = Field(
        None, description="HOST:PORT the edge brokers bridge to (default: the clients' host:port)"
    )
    client_certs: tuple[str, ...] = Field(
        (), strict=False, description="the users that also get a TLS client certificate"
    )
    require_client_certs: bool = Field(
        False, description="the broker demands a client certificate; every user gets one"
    )
    server_names: tuple[str, ...] = Field(
        (),
        strict=False,
        description="more names of the broker for its certificate; the first is the clients' host",
    )
    prefix: str = Field("splitmq", description="first level(s) of every topic")
    share_group: str = Field(DEFAULT_SHARE_GROUP, description="the workers' share group")
    discovery_prefix: str = Field(DEFAULT_DISCOVERY_PREFIX, description="Home Assistant's prefix")
    port: int = Field(
        DEFAULT_TLS_PORT, ge=1, le=65535, description="the port in each user's broker section"
    )
    plugin: str | None = Field(None, description="the dynamic-security plugin (else searched)")
    max_frame_bytes: int = Field(
        DEFAULT_MAX_FRAME_BYTES,
        gt=0,
        description="the site's frame limit, written as the broker's message_size_limit (the "
        "workers' frame_limits.max_frame_bytes must equal it)",
    )
    force: bool = Field(False, description="replace an existing profile")

    @property
    def client_host(self) -> str:
        """The broker's address in each user's file."""
        return self.server_names[0] if self.server_names else "127.0.0.1"

    @property
    def bridge_address(self) -> str:
        """The core's address in each bridge section."""
        return self.core_address or f"{self.client_host}:{self.port}"

    def roles(self) -> dict[str, ProfileRole]:
        """Each login's role; a bad or repeated name, no user at all, or a client certificate
        for an unknown user is a `SecureProfileError`."""
        try:
            Topics(self.prefix)
            Topics(self.discovery_prefix)
            check_segment(self.share_group, "share group")
        except TopicError as exc:
            raise SecureProfileError(str(exc)) from exc
        roles: dict[str, ProfileRole] = {}
        given: list[tuple[ProfileRole, tuple[str, ...]]] = [
            ("device", self.devices),
            ("worker", self.workers),
            ("monitor", self.monitors),
            ("homeassistant", self.homeassistants),
            ("bridge", self.bridges),
        ]
        for role, names in given:
            for name in names:
                try:
                    check_segment(name, "user name")
                except TopicError as exc:
                    raise SecureProfileError(str(exc)) from exc
                if name in roles:
                    raise SecureProfileError(f"user {name!r} is given twice")
                if name == CONTROL_USER:
                    raise SecureProfileError(f"{name!r} is the profile's own control login")
                roles[name] = role
        if self.bridges:
            parse_core_address(self.bridge_address)
        if not roles:
            raise SecureProfileError(
                "a profile needs at least one device, worker, monitor or homeassistant user"
            )
        unknown = sorted(set(self.client_certs) - set(roles))
        if unknown:
            raise SecureProfileError(f"client certificates for unknown users: {', '.join(unknown)}")
        # The login that revokes the others (broker.revocation); it stays in the profile.
        roles[CONTROL_USER] = "control"
        return roles


@dataclass(frozen=True)
class _ProfilePaths:
    """Where each file of a profile goes."""

    directory: Path

    @property
    def users(self) -> Path:
        return self.directory / "users"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def dynsec(self) -> Path:
        return self.directory / "dynamic-security.json"

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def crl(self) -> Path:
        return self.directory / CRL_NAME


def find_dynsec_plugin() -> str:
    """Path of Mosquitto's dynamic-security plugin (it ships with Mosquitto 2.0)."""
    for directory in PLUGIN_DIRS:
        candidate = Path(directory) / PLUGIN_NAME
        if candidate.is_file():
            return str(candidate)
    broker = find_program("mosquitto", ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"))
    if broker is not None:
        beside = Path(broker).resolve().parent.parent / "lib" / PLUGIN_NAME
        if beside.is_file():
            return str(beside)
    raise SecureProfileError(
        f"{PLUGIN_NAME} not found in {', '.join(PLUGIN_DIRS)}; it ships with Mosquitto 2.0 "
        "(pass its path with --plugin)"
    )


# -- access control ------------------------------------------------------------------------------


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def role_acls(
    user: str,
    role: ProfileRole,
    *,
    prefix: str = "splitmq",
    share_group: str = DEFAULT_SHARE_GROUP,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> list[dict[str, Any]]:
    """The plugin ACLs of one user, `broker.access.role_rules` rendered: a write rule is
    `publishClientSend`; a read rule is `publishClientReceive` plus a `subscribePattern` for
    each filter it may subscribe with (the plugin checks both). Everything not listed is
    refused (see `dynsec_config`)."""
    rules = role_rules(
        role, user, prefix=prefix, share_group=share_group, discovery_prefix=discovery_prefix
    )
    acls = []
    for rule in rules:
        if rule.access == "write":
            acls.append(_acl("publishClientSend", rule.pattern))
            continue
        acls += [_acl("subscribePattern", topic) for topic in rule.subscriptions]
        acls.append(_acl("publishClientReceive", rule.pattern))
    return acls


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's password fields: base64 PBKDF2-SHA512 hash, salt and iterations."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS, HASH_BYTES)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": HASH_ITERATIONS,
    }


def dynsec_config(
    users: Iterable[ProfileUser],
    *,
    prefix: str = "splitmq",
    share_group: str = DEFAULT_SHARE_GROUP,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> dict[str, Any]:
    """The dynamic-security plugin's JSON: deny by default, one role per user."""
    clients, roles = [], []
    for user in sorted(users, key=lambda u: u.name):
        rolename = f"{user.role}-{user.name}"
        clients.append(
            {
                "username": user.name,
                "textname": f"splitmq {user.role}",
                "roles": [{"rolename": rolename}],
                **hash_password(user.password),
            }
        )
        acls = role_acls(
            user.name,
            user.role,
            prefix=prefix,
            share_group=share_group,
            discovery_prefix=discovery_prefix,
        )
        roles.append({"rolename": rolename, "acls": acls})
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


# -- files ---------------------------------------------------------------------------------------


def require_cryptography() -> None:
    """Fail before anything is written when `cryptography` (the `broker` extra) is missing: only
    provisioning needs it, so a device or worker install leaves it out."""
    try:
        importlib.import_module("cryptography.x509")
    except ImportError as exc:
        raise BrokerExtraMissingError("writing a secure profile", "cryptography") from exc


def _write_cert(path: Path, pem: bytes) -> None:
    path.write_bytes(pem)
    os.chmod(path, 0o644)


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# -- the profile ---------------------------------------------------------------------------------


def render_broker_config(
    profile_dir: Path,
    *,
    plugin: str,
    require_client_certs: bool = False,
    cert_login: Path | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> str:
    """The profile's mosquitto.conf (a launcher template: `${port}`, `${bind_address}`); the
    size limits are written out from `max_frame_bytes`, so the profile keeps its own."""
    plain = DEFAULT_CONFIG.read_text(encoding="utf-8")
    tuning = plain[plain.index(TUNING_MARK) :]
    tuning = string.Template(tuning).safe_substitute(size_limits(max_frame_bytes))
    directory = profile_dir.resolve()
    return f"""# splitmq secure profile, written by `splitmq broker init`.
# A launcher template: `splitmq broker --config {directory / "mosquitto.conf"} --port 8883`
# fills ${{port}} and ${{bind_address}}. Users and their ACLs live in dynamic-security.json.

# --- Listener: TLS only -------------------------------------------------------------------------
listener ${{port}} ${{bind_address}}
cafile {directory / "ca.crt"}
certfile {directory / "server.crt"}
keyfile {directory / "server.key"}
tls_version tlsv1.2
{_client_cert_lines(require_client_certs, directory / CRL_NAME, cert_login is not None)}

# --- Access -------------------------------------------------------------------------------------
allow_anonymous false
# Every client id is its login, so no client can connect as another one's id and kick it off.
use_username_as_clientid true
# Users, passwords and one role per user, deny by default. The plugin (unlike acl_file in 2.0)
# also checks SUBSCRIBE, so a device cannot join the workers' $$share group.
{_cert_login_lines(cert_login)}plugin {plugin}
plugin_opt_config_file {directory / "dynamic-security.json"}

{tuning}"""


def _cert_login_lines(cert_login: Path | None) -> str:
    if cert_login is None:
        return ""
    return (
        "# First: a login must present the certificate of its own name (then its password).\n"
        f"plugin {cert_login}\n"
    )


def _client_cert_lines(required: bool, crl: Path, bound_by_plugin: bool) -> str:
    """The listener's client-certificate lines: with mutual TLS one node's certificate cannot
    log in as another node, refused by the certificate-login plugin where it was built, else
    by taking the certificate's common name as the login."""
    if not required:
        return (
            "# Client certificates: not requested; the password is the identity (a certificate a\n"
            "# client presents plays no part).\n"
            "require_certificate false"
        )
    if bound_by_plugin:
        identity = (
            "# Client certificates: required (mutual TLS), from this profile's CA only. A login\n"
            "# needs the certificate of its own name and its password (the plugin below).\n"
            "require_certificate true\n"
            "use_identity_as_username false\n"
        )
    else:
        identity = (
            "# Client certificates: required (mutual TLS), from this profile's CA only, and the\n"
            "# certificate's common name is the login: no password is asked for, and a client\n"
            "# cannot name another user than its certificate's.\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
        )
    return (
        identity
        + "# Certificates of revoked logins (`broker init --revoke`). Mosquitto reads this "
        "list at\n# start only; the revocation itself acts at once through dynamic security.\n"
        f"crlfile {crl}"
    )


# How each role uses its users/<name>.yaml (the first lines of the file).
_USAGE = {
    "device": (
        "# Merge into the device's config. Its node id must be its login (device_id: {name}).",
    ),
    "worker": (
        "# Merge into the worker's config. Its node id must be its login (worker_id: {name}).",
    ),
    "bridge": (
        "# An edge broker's login at this core: bridges/{name}.conf holds it as a bridge",
        "# section. This file serves a client that checks the bridge's view of the core.",
    ),
    "monitor": (
        "# A config as it is: splitmq monitor --config {path}",
        "#                    splitmq exporter --config {path}",
    ),
    "homeassistant": (
        "# Home Assistant's MQTT login (its integration: this host, port, username, password",
        "# and the CA below), and a config as it is for",
        "#   splitmq homeassistant remove --config {path} NODE...",
    ),
    "control": (
        "# The profile's own administrator: `splitmq broker init DIR --revoke NAME` logs in",
        "# with it. Give it to no node: it may change every login and clear any topic.",
    ),
}


def _client_yaml(profile: Path, user: ProfileUser, options: ProfileOptions) -> str:
    path = profile.resolve() / "users" / f"{user.name}.yaml"
    usage = [line.format(name=user.name, path=path) for line in _USAGE[user.role]]
    lines = [
        f"# splitmq {user.role} {user.name}: written by `splitmq broker init`.",
        *usage,
        "broker:",
        f"  host: {options.client_host}",
        f"  port: {options.port}",
        f"  username: {user.name}",
        f"  password: {json.dumps(user.password)}",
        "  # or, to keep the secret out of a shared config, instead of `password`:",
        f"  # password_file: {profile.resolve() / 'users' / f'{user.name}.password'}",
        "  tls:",
        f"    ca_certs: {profile.resolve() / 'ca.crt'}",
    ]
    if user.certfile is not None and user.keyfile is not None:
        lines += [
            f"    certfile: {user.certfile.resolve()}",
            f"    keyfile: {user.keyfile.resolve()}",
        ]
    lines.append(f"topic_prefix: {options.prefix}")
    if user.role == "device":
        lines.append(f"device_id: {user.name}")
    elif user.role == "worker":
        lines += [f"worker_id: {user.name}", f"share_group: {options.share_group}"]
    else:  # mqtt_session.options.ClientConfig
        lines.append(f"discovery_prefix: {options.discovery_prefix}")
    return "\n".join(lines) + "\n"


def _share_with_broker(paths: Iterable[Path], directory: Path | None) -> None:
    """Run as root, `splitmq broker` starts mosquitto as the `mosquitto` account: give that
    account's group read access to what the broker reads (the other secrets stay private), and
    a way into `directory` if init created it (the directories above must let it through)."""
    account = broker_account()
    if account is None:
        return
    if directory is not None:
        os.chown(directory, -1, account.pw_gid)
        os.chmod(directory, 0o750)
    for path in paths:
        os.chown(path, -1, account.pw_gid)
        os.chmod(path, 0o640)


def unreachable_for_broker(directory: Path) -> Path | None:
    """Run as root, the first directory above `directory` that the `mosquitto` account cannot
    pass through (so the broker could not read the profile); None if it can, or not root."""
    account = broker_account()
    if account is None:
        return None
    for ancestor in reversed(directory.resolve().parents):
        info = ancestor.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == account.pw_gid:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return ancestor
    return None


def init_profile(directory: Path, options: ProfileOptions) -> SecureProfile:
    """Write a secure broker profile into `directory` (see the module docstring).

    Passwords are random. Nothing is written when the options are wrong, `cryptography` is
    missing or `directory` holds a profile already (unless `options.force`).
    """
    roles = options.roles()
    require_cryptography()
    plugin = options.plugin or find_dynsec_plugin()
    paths = _ProfilePaths(Path(directory))
    if paths.ca_cert.exists() and not options.force:
        raise SecureProfileError(
            f"{paths.directory} already holds a profile (ca.crt); pass --force to replace it "
            "(every client then needs its new files)"
        )
    created = not paths.directory.exists()
    try:
        _make_private_dirs(paths, created)
        users = _write_certificates(paths, options, roles)
        _write_dynsec(paths, users.values(), options)
        cert_login, fallback = _cert_login(paths, options)
        text = render_broker_config(
            paths.directory,
            plugin=plugin,
            require_client_certs=options.require_client_certs,
            cert_login=cert_login,
            max_frame_bytes=options.max_frame_bytes,
        )
        paths.config.write_text(text, encoding="utf-8")
        _write_user_files(paths, users.values(), options)
        _write_bridges(paths, users.values(), options)
        _share_with_broker([paths.server_key, paths.dynsec], paths.directory if created else None)
    except OSError as exc:
        raise SecureProfileError(f"cannot write the profile into {directory}: {exc}") from exc
    return SecureProfile(
        directory=paths.directory,
        config=paths.config,
        ca_cert=paths.ca_cert,
        server_cert=paths.server_cert,
        server_key=paths.server_key,
        dynsec=paths.dynsec,
        users=users,
        warnings=_warnings(paths.directory) + fallback,
        cert_login=cert_login,
    )


def _cert_login(
    paths: _ProfilePaths, options: ProfileOptions
) -> tuple[Path | None, tuple[str, ...]]:
    """The certificate-login plugin built into the profile, or None and the warning why not."""
    if not options.require_client_certs:
        return None, ()
    try:
        return build_cert_login_plugin(paths.directory), ()
    except CertLoginBuildError as exc:
        return None, (
            f"{exc}: so the certificate's name is the login instead (use_identity_as_username), "
            "and another node's certificate with this node's password connects as that node "
            "rather than being refused",
        )


def _make_private_dirs(paths: _ProfilePaths, created: bool) -> None:
    """The profile directory (if init creates it) and users/ are the owner's alone."""
    paths.users.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(paths.directory, 0o700)
    os.chmod(paths.users, 0o700)


def _write_certificates(
    paths: _ProfilePaths, options: ProfileOptions, roles: dict[str, ProfileRole]
) -> dict[str, ProfileUser]:
    """A new CA, the broker's certificate, and every user with its password and, if asked
    for, its client certificate."""
    # Here, not at the top: only writing a profile needs cryptography (the `broker` extra).
    from broker.certificates import issue_cert, make_ca, make_crl

    ca = make_ca()
    _write_pair(paths.ca_cert, paths.ca_key, ca)
    if options.require_client_certs:
        _write_cert(paths.crl, make_crl(ca, ()))
    names = list(dict.fromkeys(["127.0.0.1", "localhost", *options.server_names]))
    common_name = options.server_names[0] if options.server_names else "localhost"
    server = issue_cert(ca, common_name, server=True, names=names)
    _write_pair(paths.server_cert, paths.server_key, server)
    with_certs = set(roles) if options.require_client_certs else set(options.client_certs)
    users: dict[str, ProfileUser] = {}
    for name, role in roles.items():
        certfile = keyfile = None
        if name in with_certs:
            certfile, keyfile = paths.users / f"{name}.crt", paths.users / f"{name}.key"
            _write_pair(certfile, keyfile, issue_cert(ca, name, server=False))
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        users[name] = ProfileUser(name, role, password, certfile, keyfile)
    return users


def _write_dynsec(
    paths: _ProfilePaths, users: Iterable[ProfileUser], options: ProfileOptions
) -> None:
    config = dynsec_config(
        users,
        prefix=options.prefix,
        share_group=options.share_group,
        discovery_prefix=options.discovery_prefix,
    )
    _write_private(paths.dynsec, (json.dumps(config, indent=2) + "\n").encode())


def _write_pair(cert_path: Path, key_path: Path, pair: KeyAndCert) -> None:
    _write_cert(cert_path, pair.cert_pem())
    _write_private(key_path, pair.key_pem())


def _write_user_files(
    paths: _ProfilePaths, users: Iterable[ProfileUser], options: ProfileOptions
) -> None:
    """Each user's broker section (users/<name>.yaml) and its password alone (.password)."""
    for user in users:
        text = _client_yaml(paths.directory, user, options)
        _write_private(paths.users / f"{user.name}.yaml", text.encode())
        _write_private(paths.users / f"{user.name}.password", f"{user.password}\n".encode())


def _write_bridges(
    paths: _ProfilePaths, users: Iterable[ProfileUser], options: ProfileOptions
) -> None:
    """bridges/<name>.conf for each bridge login, with the CA and its certificate beside it:
    the folder an edge broker needs (the .conf holds the password, the .key the key: 0600, or
    0640 for the `mosquitto` group when written by root, as the broker's own secrets)."""
    bridges = [user for user in users if user.role == "bridge"]
    if not bridges:
        return
    folder = paths.directory / "bridges"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o700)
    cafile = folder / "ca.crt"
    _write_cert(cafile, paths.ca_cert.read_bytes())
    for user in bridges:
        certfile = keyfile = None
        if user.certfile is not None and user.keyfile is not None:
            certfile, keyfile = folder / f"{user.name}.crt", folder / f"{user.name}.key"
            _write_cert(certfile, user.certfile.read_bytes())
            _write_private(keyfile, user.keyfile.read_bytes())
        spec = BridgeSpec(
            name=user.name,
            core_address=options.bridge_address,
            prefix=options.prefix,
            cafile=cafile.resolve(),
            password=user.password,
            certfile=certfile.resolve() if certfile else None,
            keyfile=keyfile.resolve() if keyfile else None,
        )
        conf = folder / f"{user.name}.conf"
        _write_private(conf, render_bridge(spec).encode())
        _share_with_broker([conf, *([keyfile] if keyfile else [])], folder)


def _warnings(directory: Path) -> tuple[str, ...]:
    blocked = unreachable_for_broker(directory)
    if blocked is None:
        return ()
    return (
        f"started by root, mosquitto runs as an unprivileged account, which cannot pass "
        f"through {blocked}: keep the profile where that account can reach it",
    )
