"""Run a real Mosquitto process with the project's configuration on a given or free port.

    with MosquittoBroker() as broker:          # free port on 127.0.0.1
        settings = BrokerSettings(host=broker.host, port=broker.port)

The configuration template (broker/mosquitto.conf by default) is rendered into a temporary
directory together with the broker's log; `stop()` / `restart()` keep the port, so tests can
take the broker away under running clients and bring it back.

Mosquitto dies with the process that started it, even one killed with SIGKILL: on Linux the
child asks the kernel for SIGTERM when its parent goes (PR_SET_PDEATHSIG). Run as root, the
child is started as the `mosquitto` user directly, because mosquitto's own privilege drop would
clear that request. A SIGKILLed parent cannot remove its temporary directory, so the next
launcher on the same host removes directories whose owner process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from broker.auth import BrokerUser, write_auth_files
from broker.errors import (
    BrokerConfigError,
    BrokerExitedError,
    BrokerStartError,
    MosquittoNotFoundError,
    PortInUseError,
)
from broker.programs import find_program
from schemas.frame import DEFAULT_MAX_FRAME_BYTES

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "mosquitto.conf"
SECURE_CONFIG = PACKAGE_DIR / "mosquitto-secure.conf"
# Where package managers put the daemon when sbin is not on a user's PATH (Debian: /usr/sbin).
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
# The well-known MQTT port belongs to a system broker on many machines (this one included).
RESERVED_PORT = 1883
LOG_TAIL_LINES = 20
# Mosquitto logs "mosquitto version X running" once its listeners are open.
RUNNING_MARK = " running"
PORT_TAKEN = "Address already in use"  # mosquitto's log line when its listener's port is taken
UNLOGGED_GRACE_S = 0.5
WORKDIR_PREFIX = "splitmq-broker-"
# Written into each working directory: "<host name> <pid>" of the process that owns it.
OWNER_FILE = "owner"
# prctl(2) option: the signal this process gets when the thread that forked it exits.
PR_SET_PDEATHSIG = 1
# Accounts mosquitto switches to when started as root, in its own order of preference.
BROKER_ACCOUNTS = ("mosquitto", "nobody")
# max_packet_size as a multiple of the frame limit. Up to it an oversized frame (a device
# configured for a larger model, a 16 MiB marker bomb) is read and refused politely: PUBACK
# 0x95, the sender keeps its connection and whatever it sends next. Only a larger packet costs
# its sender the connection; the bound keeps the broker from buffering arbitrary sizes.
PACKET_BOUND_FACTOR = 8


def size_limits(max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> dict[str, str]:
    """The templates' size placeholders for a site whose frames are at most `max_frame_bytes`:
    `message_size_limit` refuses a larger payload (PUBACK 0x95, nothing forwarded),
    `max_packet_size` disconnects a client whose packet is larger still."""
    if max_frame_bytes <= 0:
        raise BrokerConfigError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
    return {
        "message_size_limit": str(max_frame_bytes),
        "max_packet_size": str(max_frame_bytes * PACKET_BOUND_FACTOR),
    }


def find_mosquitto() -> str:
    """Path of the `mosquitto` daemon: PATH first, then the usual sbin directories."""
    found = find_program("mosquitto", SBIN_DIRS)
    if found is None:
        raise MosquittoNotFoundError(list(SBIN_DIRS))
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (never 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != RESERVED_PORT:
            return port


def render_config(template: Path, values: Mapping[str, str]) -> str:
    """Fill the `${name}` placeholders of a configuration template; all must be given."""
    try:
        text = template.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrokerConfigError(f"cannot read broker config template {template}: {exc}") from exc
    try:
        return string.Template(text).substitute(values)
    except KeyError as exc:
        hint = ""
        if exc.args[0] in ("password_file", "acl_file"):
            hint = (
                "; for a broker with users, write a profile with `splitmq broker init DIR` "
                "and run `splitmq broker --config DIR/mosquitto.conf`"
            )
        raise BrokerConfigError(
            f"broker config template {template} uses placeholder ${{{exc.args[0]}}}, "
            f"which the launcher does not fill (it fills: {', '.join(sorted(values))}){hint}"
        ) from exc
    except ValueError as exc:
        raise BrokerConfigError(f"broker config template {template} is malformed: {exc}") from exc


def describe_exit(returncode: int | None) -> str:
    """`Popen.returncode` in words: "exited with code 3", "was killed by SIGKILL"."""
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def broker_account() -> pwd.struct_passwd | None:
    """The account mosquitto runs as when started by root; None when not root (or none exists)."""
    if os.geteuid() != 0:
        return None
    for name in BROKER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _readable_by_broker_user(workdir: Path, files: list[Path]) -> None:
    """Run as root, mosquitto runs as the `mosquitto` user (or `nobody`): hand it the password
    and ACL files and let it through the private workdir to them and the rendered config."""
    account = broker_account()
    if account is None:
        return
    os.chmod(workdir, 0o711)  # traverse only: the directory listing stays private
    for path in (files[0].parent, *files) if files else ():
        os.chown(path, account.pw_uid, account.pw_gid)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGTERM when this process dies (Linux).

    The kernel sends it when the *thread* that forked the child exits, so it is only asked for
    from the main thread (which lives as long as the process); from another thread, and on
    other systems, the broker lives until stopped. The child checks that its parent is still
    the one that forked it: if that died during the fork, no signal would ever come.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _owner_mark() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove launcher working directories whose owner process on this host is gone.

    A launcher killed by SIGKILL leaves its directory behind (its broker died with it). Only
    directories with an owner file naming this host and a pid that no longer exists are
    removed; anything unreadable or foreign is left alone. Returns what was removed.
    """
    parent = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    host = socket.gethostname()
    for candidate in parent.glob(WORKDIR_PREFIX + "*"):
        try:
            owner_host, _, pid_text = (candidate / OWNER_FILE).read_text().strip().rpartition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if owner_host == host and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


class MosquittoBroker:
    """A `mosquitto -c <rendered config>` child process; a context manager.

    `port=None` picks a free port (and retries with another if it was taken in between).
    `substitutions` fills extra placeholders of a custom template; `max_frame_bytes` (the
    site's frame limit, as the workers' `frame_limits`) fills the size limits. With `users`, the
    broker runs mosquitto-secure.conf: no anonymous clients, a password file and a per-role ACL
    written into its temporary directory (broker.auth).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        config_template: str | Path | None = None,
        substitutions: Mapping[str, str] | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 10.0,
        users: Mapping[str, BrokerUser] | None = None,
        topic_prefix: str = "splitmq",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if port == RESERVED_PORT:
            raise BrokerConfigError(
                f"port {RESERVED_PORT} is left to the system's own broker; "
                "choose another port or leave it out to get a free one"
            )
        if port is not None and not 0 < port < 65536:
            raise BrokerConfigError(f"port must be in 1..65535, got {port}")
        self.host = host
        self._requested_port = port
        self._port: int | None = port
        default = SECURE_CONFIG if users else DEFAULT_CONFIG
        self._template = Path(config_template) if config_template else default
        self._users = dict(users or {})
        self._topic_prefix = topic_prefix
        self._substitutions = {**size_limits(max_frame_bytes), **(substitutions or {})}
        self.max_frame_bytes = max_frame_bytes
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        self._log_offset = 0

    # -- properties ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerStartError("the broker has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """mqtts:// when the broker's config gives its listener a certificate."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether the running config's listener speaks TLS (it names a certfile)."""
        if self._workdir is None:
            return False
        config = self.config_path
        text = config.read_text(encoding="utf-8") if config.is_file() else ""
        return any(line.split()[:1] == ["certfile"] for line in text.splitlines())

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise BrokerStartError("the broker has no working directory yet: call start() first")
        return Path(self._workdir.name)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def check_running(self) -> None:
        """Raise `BrokerExitedError` (with mosquitto's status and log tail) if the broker this
        instance started has exited on its own; nothing if it runs or was stopped."""
        process = self._process
        if process is None or process.poll() is None:
            return
        self._process = None
        self._close_log()
        raise BrokerExitedError(
            f"mosquitto (pid {process.pid}) on {self.host}:{self._port} "
            f"{describe_exit(process.returncode)}{self._log_tail()}"
        )

    def log_text(self) -> str:
        """Everything the broker has logged so far (all runs of this instance)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, BrokerStartError):
            return ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MosquittoBroker:
        """Render the config, start mosquitto and wait until its port accepts connections."""
        if self.is_running():
            return self
        binary = self._binary or find_mosquitto()
        if self._workdir is None:
            remove_orphaned_workdirs()
            self._workdir = tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX)
            (self.workdir / OWNER_FILE).write_text(_owner_mark() + "\n", encoding="utf-8")
            auth: list[Path] = []
            if self._users:
                files = write_auth_files(self.workdir / "auth", self._users, self._topic_prefix)
                auth = [files.password_file, files.acl_file]
                self._substitutions.update(files.substitutions())
            _readable_by_broker_user(self.workdir, auth)
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            if self._port is None or (attempt > 0 and self._requested_port is None):
                self._port = free_port(self.host)
            try:
                self._launch(binary)
                return self
            except BrokerStartError:
                port_taken = PORT_TAKEN in self._current_run_log()
                if attempt + 1 >= attempts or not port_taken:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL); the port and workdir are kept."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        self._process = None
        self._close_log()

    def restart(self) -> MosquittoBroker:
        """Stop and start again on the same port (clients see a broker outage)."""
        self.stop()
        port = self.port
        self._launch(self._binary or find_mosquitto(), port=port)
        return self

    def close(self) -> None:
        """Stop the broker and remove its temporary directory."""
        self.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"MosquittoBroker({self.host}:{self._port}, {state})"

    # -- internals -------------------------------------------------------------------------------

    def _launch(self, binary: str, port: int | None = None) -> None:
        port = port if port is not None else self.port
        values = {"port": str(port), "bind_address": self.host, **self._substitutions}
        self.config_path.write_text(render_config(self._template, values), encoding="utf-8")
        self._close_log()
        self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._log_offset = os.fstat(self._log_file).st_size
        account = broker_account()
        self._process = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            cwd=self.workdir,
            # Its own session: a terminal's Ctrl-C goes to the program that owns the broker,
            # which stops it in order, not to the broker, which would leave the program without.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
            # Root: switch before exec, so the death signal asked for after it stays set.
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
        self._wait_until_ready(port)

    def _wait_until_ready(self, port: int) -> None:
        """Ready = our process alive, the port accepting, and the log saying "running".

        The log check matters: another socket on the same port would accept connections while
        our mosquitto is still on its way to failing with "Address already in use". A custom
        template that does not log at level information is trusted after the port has accepted
        for a short grace period with the process still alive.
        """
        deadline = time.monotonic() + self._startup_timeout_s
        accepted_since: float | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                self._process = None
                if PORT_TAKEN in self._current_run_log():
                    # The cause first, in one line: the log tail would only repeat it.
                    raise PortInUseError(
                        f"cannot listen on {self.host}:{port}: {PORT_TAKEN} (another broker or "
                        "program has the port; without --port, `splitmq broker` picks a free one)"
                    )
                raise BrokerStartError(
                    f"mosquitto {describe_exit(code)} while starting on {self.host}:{port}"
                    f"{self._log_tail()}"
                )
            # mosquitto logs "running" only once its listeners are open; probing the port
            # then would cost a TLS listener an "unexpected eof" line in its log at every start.
            if RUNNING_MARK in self._current_run_log():
                return
            if accepted_since is None and port_accepts(self.host, port):
                accepted_since = time.monotonic()
            if accepted_since is not None and time.monotonic() - accepted_since > UNLOGGED_GRACE_S:
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerStartError(
            f"mosquitto did not accept connections on {self.host}:{port} within "
            f"{self._startup_timeout_s:g} s{self._log_tail()}"
        )

    def _current_run_log(self) -> str:
        return self.log_text()[self._log_offset :]

    def _log_tail(self) -> str:
        lines = self._current_run_log().strip().splitlines()[-LOG_TAIL_LINES:]
        return ("; its log ends with:\n  " + "\n  ".join(lines)) if lines else ""

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                os.close(self._log_file)
            self._log_file = None
