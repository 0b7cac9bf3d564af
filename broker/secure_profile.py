"""`splitmq broker init DIR`: a broker profile that lets no client where it does not belong.

    profile = init_profile(Path("site"), devices=["cam-1"], workers=["w1"], monitors=["mon"])
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

Why Mosquitto's dynamic-security plugin and not an `acl_file`: in Mosquitto 2.0 the ACL file
is never consulted for SUBSCRIBE (src/security_default.c returns success for every
subscription). So a device user could join the workers' `$share` group; the broker then routed
a share of the requests to it and dropped them at the delivery check (measured: 4 timeouts in
8 s). The plugin checks subscriptions, `$share/<group>/...` included as written, and refuses
them in the SUBACK. Mosquitto 2.0.11's plugin does not substitute `%u` in its ACLs, so each
user gets a role of its own with its name written out. `use_username_as_clientid` makes every
client id its login, so no one can take over (and kick) another client's session.

The identity rule this relies on: a node's login is its node id (`device_id`, `worker_id`), so
that its status, telemetry and result topics carry its login.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.errors import SecureProfileError
from broker.launcher import DEFAULT_CONFIG, broker_account
from broker.programs import find_program
from schemas.errors import TopicError
from schemas.topics import Topics, check_segment

ProfileRole = Literal["device", "worker", "monitor"]
DEFAULT_SHARE_GROUP = "splitmq-workers"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"
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
CA_DAYS = 3650
LEAF_DAYS = 825
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

    def client_file(self, name: str) -> Path:
        return self.directory / "users" / f"{name}.yaml"

    def password_file(self, name: str) -> Path:
        return self.directory / "users" / f"{name}.password"


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


def _send(*topics: str) -> list[dict[str, Any]]:
    return [_acl("publishClientSend", topic) for topic in topics]


def _read(*topics: str) -> list[dict[str, Any]]:
    """Subscribe to and receive each topic (filter); both are checked by the plugin."""
    acls = []
    for topic in topics:
        acls += [_acl("subscribePattern", topic), _acl("publishClientReceive", topic)]
    return acls


def role_acls(
    user: str,
    role: ProfileRole,
    *,
    prefix: str = "splitmq",
    share_group: str = DEFAULT_SHARE_GROUP,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> list[dict[str, Any]]:
    """The plugin ACLs of one user: everything not listed is refused (see `dynsec_config`).

    device: publishes only its own requests (`req/<model>/<k>/<user>`, and direct ones
    `req/<model>/<k>/<user>/<worker>`: the request topic's device level is its login, and the
    worker answers on that device's result topic, so no device can have results sent into
    another's), its own probes, status, state and discovery config; reads only its own results,
    the workers' telemetry, the model catalogs and everyone's status.
    worker: reads requests only through the share group, and those addressed to it by name
    (`req/+/+/+/<user>`); publishes results (to any device: it answers every device) and its
    own telemetry, status and discovery config, and model catalogs.
    monitor: reads everything under the prefix, the broker's `$SYS` statistics and the
    discovery topics; publishes nothing.
    """
    topics = Topics(prefix)
    check_segment(user, "user name")
    discovery = [f"{discovery_prefix}/device/{user}/config"]
    ha_status = f"{discovery_prefix}/status"
    requests = f"{prefix}/req/+/+"  # <model>/<k>
    if role == "device":
        return [
            *_send(
                f"{requests}/{user}",
                f"{requests}/{user}/+",
                topics.probe(user),
                topics.status(user),
                topics.device_state(user),
                *discovery,
            ),
            *_read(
                topics.result(user),
                topics.telemetry_all(),
                topics.status_all(),
                topics.catalog_all(),
                ha_status,
            ),
        ]
    if role == "worker":
        return [
            *_send(
                f"{prefix}/result/+",
                topics.telemetry(user),
                topics.catalog_all(),  # any model's: workers of one model share its catalog
                topics.status(user),
                *discovery,
            ),
            # The share group as written in SUBSCRIBE: a plain `<prefix>/req/...` stays refused
            # (the `+` of the device level matches the filter's own `+`).
            _acl("subscribePattern", f"$share/{share_group}/{requests}/+"),
            _acl("publishClientReceive", f"{requests}/+"),
            *_read(f"{requests}/+/{user}"),
            *_read(topics.status_all(), ha_status),
        ]
    return _read(f"{prefix}/#", "$SYS/#", f"{discovery_prefix}/#")


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


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "splitmq"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str = "splitmq private CA") -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(key, cert)


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_cert(
    issuer: _Issuer, common_name: str, *, server: bool, names: Sequence[str] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate signed by `issuer`: a TLS server's (with `names` as SANs) or a
    client's (its common name is the login)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san_entry(n) for n in names]), critical=False
        )
    return key, builder.sign(issuer.key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# -- the profile ---------------------------------------------------------------------------------


def render_broker_config(
    profile_dir: Path, *, plugin: str, require_client_certs: bool = False
) -> str:
    """The profile's mosquitto.conf (a launcher template: `${port}`, `${bind_address}`)."""
    plain = DEFAULT_CONFIG.read_text(encoding="utf-8")
    tuning = plain[plain.index(TUNING_MARK) :]
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
# Client certificates: {"required (mutual TLS)" if require_client_certs else "optional"}.
require_certificate {"true" if require_client_certs else "false"}

# --- Access -------------------------------------------------------------------------------------
allow_anonymous false
# Every client id is its login, so no client can connect as another one's id and kick it off.
use_username_as_clientid true
# Users, passwords and one role per user, deny by default. The plugin (unlike acl_file in 2.0)
# also checks SUBSCRIBE, so a device cannot join the workers' $$share group.
plugin {plugin}
plugin_opt_config_file {directory / "dynamic-security.json"}

{tuning}"""


def _client_yaml(
    profile: Path, user: ProfileUser, *, host: str, port: int, prefix: str, share_group: str
) -> str:
    lines = [
        f"# splitmq {user.role} {user.name}: written by `splitmq broker init`.",
        "# Merge into the node's config. Its node id must be its login "
        f"({'device_id' if user.role == 'device' else 'worker_id'}: {user.name}).",
        "broker:",
        f"  host: {host}",
        f"  port: {port}",
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
    lines.append(f"topic_prefix: {prefix}")
    if user.role == "device":
        lines.append(f"device_id: {user.name}")
    elif user.role == "worker":
        lines += [f"worker_id: {user.name}", f"share_group: {share_group}"]
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


def init_profile(
    directory: Path,
    *,
    devices: Sequence[str] = (),
    workers: Sequence[str] = (),
    monitors: Sequence[str] = (),
    client_certs: Sequence[str] = (),
    require_client_certs: bool = False,
    server_names: Sequence[str] = (),
    prefix: str = "splitmq",
    share_group: str = DEFAULT_SHARE_GROUP,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    port: int = DEFAULT_TLS_PORT,
    plugin: str | None = None,
    force: bool = False,
) -> SecureProfile:
    """Write a secure broker profile into `directory` (see the module docstring).

    Passwords are random. `client_certs` names the users that get a client certificate;
    `require_client_certs` makes the broker demand one and issues one to every user. `port`
    and the first of `server_names` (else 127.0.0.1) go into each user's broker section.
    """
    try:
        Topics(prefix)
        Topics(discovery_prefix)
        check_segment(share_group, "share group")
    except TopicError as exc:
        raise SecureProfileError(str(exc)) from exc
    roles: dict[str, ProfileRole] = {}
    given: list[tuple[ProfileRole, Sequence[str]]] = [
        ("device", devices),
        ("worker", workers),
        ("monitor", monitors),
    ]
    for role, names in given:
        for name in names:
            try:
                check_segment(name, "user name")
            except TopicError as exc:
                raise SecureProfileError(str(exc)) from exc
            if name in roles:
                raise SecureProfileError(f"user {name!r} is given twice")
            roles[name] = role
    if not roles:
        raise SecureProfileError("a profile needs at least one device, worker or monitor")
    unknown = sorted(set(client_certs) - set(roles))
    if unknown:
        raise SecureProfileError(f"client certificates for unknown users: {', '.join(unknown)}")
    plugin = plugin or find_dynsec_plugin()
    directory = Path(directory)
    if (directory / "ca.crt").exists() and not force:
        raise SecureProfileError(
            f"{directory} already holds a profile (ca.crt); pass --force to replace it "
            "(every client then needs its new files)"
        )
    users_dir = directory / "users"
    created = not directory.exists()
    try:
        users_dir.mkdir(parents=True, exist_ok=True)
        if created:
            os.chmod(directory, 0o700)
        os.chmod(users_dir, 0o700)
        ca = make_ca()
        names = list(dict.fromkeys(["127.0.0.1", "localhost", *server_names]))
        common_name = server_names[0] if server_names else "localhost"
        server_key, server_cert = issue_cert(ca, common_name, server=True, names=names)
        paths = {
            "ca_cert": directory / "ca.crt",
            "ca_key": directory / "ca.key",
            "server_cert": directory / "server.crt",
            "server_key": directory / "server.key",
            "dynsec": directory / "dynamic-security.json",
            "config": directory / "mosquitto.conf",
        }
        _write_cert(paths["ca_cert"], ca.cert)
        _write_key(paths["ca_key"], ca.key)
        _write_cert(paths["server_cert"], server_cert)
        _write_key(paths["server_key"], server_key)
        with_certs = set(roles) if require_client_certs else set(client_certs)
        users: dict[str, ProfileUser] = {}
        for name, role in roles.items():
            certfile = keyfile = None
            if name in with_certs:
                key, cert = issue_cert(ca, name, server=False)
                certfile, keyfile = users_dir / f"{name}.crt", users_dir / f"{name}.key"
                _write_cert(certfile, cert)
                _write_key(keyfile, key)
            password = secrets.token_urlsafe(PASSWORD_BYTES)
            users[name] = ProfileUser(name, role, password, certfile, keyfile)
        config = dynsec_config(
            users.values(),
            prefix=prefix,
            share_group=share_group,
            discovery_prefix=discovery_prefix,
        )
        _write_private(paths["dynsec"], (json.dumps(config, indent=2) + "\n").encode())
        paths["config"].write_text(
            render_broker_config(
                directory, plugin=plugin, require_client_certs=require_client_certs
            ),
            encoding="utf-8",
        )
        host = server_names[0] if server_names else "127.0.0.1"
        for user in users.values():
            text = _client_yaml(
                directory, user, host=host, port=port, prefix=prefix, share_group=share_group
            )
            _write_private(users_dir / f"{user.name}.yaml", text.encode())
            _write_private(users_dir / f"{user.name}.password", f"{user.password}\n".encode())
        _share_with_broker([paths["server_key"], paths["dynsec"]], directory if created else None)
    except OSError as exc:
        raise SecureProfileError(f"cannot write the profile into {directory}: {exc}") from exc
    warnings = []
    blocked = unreachable_for_broker(directory)
    if blocked is not None:
        warnings.append(
            f"started by root, mosquitto runs as an unprivileged account, which cannot pass "
            f"through {blocked}: keep the profile where that account can reach it"
        )
    return SecureProfile(
        warnings=tuple(warnings),
        directory=directory,
        config=paths["config"],
        ca_cert=paths["ca_cert"],
        server_cert=paths["server_cert"],
        server_key=paths["server_key"],
        dynsec=paths["dynsec"],
        users=users,
    )
