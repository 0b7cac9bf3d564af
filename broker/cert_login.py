"""The certificate-login plugin (plugins/cert_login.c), compiled into a profile.

With client certificates the login must be the certificate's. Mosquitto's own way to get that,
`use_identity_as_username`, throws away the username and password a client sends before any
check sees them: another device's certificate with this device's password is not refused, it
connects as the certificate's owner. The plugin is checked before the dynamic-security one:
it refuses a login whose name is not the common name of the certificate presented, and leaves a
match to dynamic security's password check, so a login needs its certificate and its password.

It is compiled at `broker init` (under a second with Debian's mosquitto-dev, libmosquitto-dev
and libssl-dev, which `make setup` installs). Where it cannot be, the profile falls back to
`use_identity_as_username` and says so in its warnings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from broker.errors import SecureProfileError

SOURCE = Path(__file__).with_name("plugins") / "cert_login.c"
PLUGIN_FILE = "splitmq_cert_login.so"
BUILD_TIMEOUT_S = 120.0
HEADERS_HINT = "on Debian: apt-get install gcc mosquitto-dev libmosquitto-dev libssl-dev"


class CertLoginBuildError(SecureProfileError):
    """The plugin could not be compiled here (no compiler, no headers)."""


def build_cert_login_plugin(directory: Path) -> Path:
    """Compile the plugin into `directory`; its path, or a `CertLoginBuildError` saying why."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise CertLoginBuildError(f"no C compiler to build {SOURCE.name} ({HEADERS_HINT})")
    target = Path(directory) / PLUGIN_FILE
    argv = [compiler, "-shared", "-fPIC", "-O2", "-o", str(target), str(SOURCE), "-lcrypto"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CertLoginBuildError(f"building {SOURCE.name} failed: {exc}") from exc
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CertLoginBuildError(f"building {SOURCE.name} failed: {last[0]} ({HEADERS_HINT})")
    os.chmod(target, 0o755)  # the broker's unprivileged account loads it
    return target
