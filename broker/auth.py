"""Users and access control for the secure broker (broker/mosquitto-secure.conf).

    users = {"worker-1": BrokerUser("s3cret", "worker"), "cam-7": BrokerUser("pw", "device")}
    files = write_auth_files(Path("/etc/splitmq"), users, prefix="splitmq")
    # mosquitto -c <mosquitto-secure.conf rendered with files.substitutions()>

The password file is written by `mosquitto_passwd` (it hashes with PBKDF2-SHA512); the ACL
gives each role only the topics it needs (`broker.access`, the rules `splitmq broker init`
renders too).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broker.access import TopicRule, role_rules
from broker.errors import AuthFileError, MosquittoPasswdNotFoundError
from broker.programs import find_program
from schemas.discovery import DEFAULT_DISCOVERY_PREFIX
from schemas.errors import TopicError

Role = Literal["worker", "device", "bridge", "admin"]
# Where packages put mosquitto_passwd (Debian: /usr/bin) when it is not on PATH.
BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin", "/usr/sbin", "/usr/local/sbin")


@dataclass(frozen=True)
class BrokerUser:
    password: str
    role: Role

    def __post_init__(self) -> None:
        if not self.password:
            raise AuthFileError("a broker user needs a non-empty password")
        if self.role not in ("worker", "device", "bridge", "admin"):
            raise AuthFileError(f"unknown role {self.role!r}: worker, device, bridge or admin")


@dataclass(frozen=True)
class AuthFiles:
    password_file: Path
    acl_file: Path

    def substitutions(self) -> dict[str, str]:
        """Values for the `${password_file}` / `${acl_file}` placeholders of the secure config."""
        return {"password_file": str(self.password_file), "acl_file": str(self.acl_file)}


def find_mosquitto_passwd() -> str:
    found = find_program("mosquitto_passwd", BIN_DIRS)
    if found is None:
        raise MosquittoPasswdNotFoundError()
    return found


def acl_rules(
    role: Role, prefix: str, name: str, *, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
) -> list[str]:
    """ACL lines for user `name` with `role` under a topic prefix: `broker.access.role_rules`
    as `topic read|write|readwrite <pattern>` lines.

    Mosquitto 2.0 applies an ACL file to deliveries and publishes only, never to SUBSCRIBE: a
    device may still join the workers' share group here (`splitmq broker init` writes a profile
    whose plugin ACLs refuse it).
    """
    try:
        rules = role_rules(role, name, prefix=prefix, discovery_prefix=discovery_prefix)
    except TopicError as exc:
        raise AuthFileError(str(exc)) from exc
    return acl_lines(rules)


def acl_lines(rules: Iterable[TopicRule]) -> list[str]:
    """One line per pattern, in the rules' order; a pattern both read and written is
    `readwrite`. A rule's `subscribe` filters have no line: an ACL file cannot check them."""
    granted: dict[str, set[str]] = {}
    for rule in rules:
        granted.setdefault(rule.pattern, set()).add(rule.access)
    return [
        f"topic {'readwrite' if len(access) == 2 else next(iter(access))} {pattern}"
        for pattern, access in granted.items()
    ]


def render_acl(users: Mapping[str, BrokerUser], prefix: str) -> str:
    """The whole ACL file: no anonymous rules, then one block per user."""
    lines = ["# splitmq ACL: written by broker.auth.write_auth_files; one block per user."]
    for name, user in sorted(users.items()):
        _check_username(name)
        rules = acl_rules(user.role, prefix, name)
        lines += ["", f"# role: {user.role}", f"user {name}", *rules]
    return "\n".join(lines) + "\n"


def write_password_file(path: Path, users: Mapping[str, BrokerUser]) -> None:
    """Create `path` with every user's hashed password (via mosquitto_passwd -b)."""
    if not users:
        raise AuthFileError("a password file needs at least one user")
    tool = find_mosquitto_passwd()
    for index, (name, user) in enumerate(sorted(users.items())):
        _check_username(name)
        create = ["-c"] if index == 0 else []
        result = subprocess.run(
            [tool, *create, "-b", str(path), name, user.password],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise AuthFileError(
                f"mosquitto_passwd failed for user {name!r} in {path}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
    os.chmod(path, 0o600)


def write_auth_files(
    directory: Path, users: Mapping[str, BrokerUser], prefix: str = "splitmq"
) -> AuthFiles:
    """Write `passwd` and `acl` into `directory` for the secure broker config."""
    directory.mkdir(parents=True, exist_ok=True)
    files = AuthFiles(password_file=directory / "passwd", acl_file=directory / "acl")
    write_password_file(files.password_file, users)
    try:
        files.acl_file.write_text(render_acl(users, prefix), encoding="utf-8")
    except OSError as exc:
        raise AuthFileError(f"cannot write ACL file {files.acl_file}: {exc}") from exc
    return files


def _check_username(name: str) -> None:
    if not name or any(c in name for c in ": \t\n#"):
        raise AuthFileError(f"user name {name!r} must be non-empty without ':', spaces or '#'")
