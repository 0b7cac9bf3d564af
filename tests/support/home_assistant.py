"""A real, headless Home Assistant for the tests: its own venv (`make ha-venv`, Python >= 3.13),
a fresh configuration directory, onboarding over HTTP, and the MQTT integration added through
the REST config flow, as a user would in the UI.

The venv is named by $SPLITMQ_HA_VENV, which `make test-ha` sets after building it with
`.ci/ha-venv`; without it `ha_venv()` is None and the tests skip saying so, so a plain
`make test` never spends Home Assistant's minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.launcher import free_port

START_TIMEOUT_S = 240.0  # a first start on a busy 2-core machine
CLIENT_ID = "http://127.0.0.1/"  # any URL: the OAuth client id onboarding issues the code for
USER = {"name": "Test", "username": "test", "password": "test-password-1", "language": "en"}

CONFIGURATION = """\
homeassistant:
  name: splitmq test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
logger:
  default: warning
"""

# Runs in Home Assistant's venv (aiohttp is there, not in the project's): one websocket command,
# its JSON result on stdout. The REST API has no device registry.
WEBSOCKET_SCRIPT = """\
import asyncio, json, sys
import aiohttp

async def main(url, token, message):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            await ws.receive_json()
            await ws.send_json({"type": "auth", "access_token": token})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json({"id": 1, **json.loads(message)})
            reply = await ws.receive_json()
            assert reply["success"], reply
            print(json.dumps(reply["result"]))

asyncio.run(main(*sys.argv[1:]))
"""


def ha_venv() -> Path | None:
    """The Home Assistant venv to run, or None where none has been built."""
    named = os.environ.get("SPLITMQ_HA_VENV")
    if not named:
        return None
    venv = Path(named)
    return venv if (venv / "bin" / "python").exists() and (venv / ".installed").exists() else None


@dataclass
class HomeAssistant:
    venv: Path
    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    refresh_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HomeAssistant:
        """Start (or restart) on the same configuration directory and wait for HTTP."""
        if not self.port:
            self.port = free_port()
            self.folder.mkdir(parents=True, exist_ok=True)
            config = CONFIGURATION.format(port=self.port)
            (self.folder / "configuration.yaml").write_text(config, encoding="utf-8")
        log = (self.folder / "ha-test.log").open("ab")
        command = [str(self.venv / "bin" / "python"), "-m", "homeassistant",
                   "-c", str(self.folder), "--skip-pip"]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        self._wait_for_http()
        if self.refresh_token:
            self._refresh()
        return self

    def _wait_for_http(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"Home Assistant exited: {self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/api/onboarding", timeout=2).close()
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise AssertionError(f"Home Assistant never served HTTP: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.folder / "home-assistant.log"
        source = path if path.exists() else self.folder / "ha-test.log"
        return "\n".join(source.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (Home Assistant saves its registries on the way out), SIGKILL after 60 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    # -- HTTP -----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, form: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None and form:
            data = urllib.parse.urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        call = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(call, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise AssertionError(f"{method} {path}: HTTP {error.code}: {detail}") from None

    def onboard(self) -> None:
        """Create the owner (onboarding's first step) and trade its auth code for tokens."""
        code = self.request("POST", "/api/onboarding/users", {"client_id": CLIENT_ID, **USER})
        grant = {"grant_type": "authorization_code", "code": code["auth_code"],
                 "client_id": CLIENT_ID}  # fmt: skip
        tokens = self.request("POST", "/auth/token", grant, form=True)
        self.token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]

    def _refresh(self) -> None:
        self.token = ""
        grant = {"grant_type": "refresh_token", "refresh_token": self.refresh_token,
                 "client_id": CLIENT_ID}  # fmt: skip
        self.token = self.request("POST", "/auth/token", grant, form=True)["access_token"]

    def add_mqtt(self, *forms: dict[str, Any], advanced: bool = False) -> Any:
        """The MQTT integration's config flow over REST, one form per step: the broker step
        (broker, port, username, password; `advanced_options: True` opens the next form, with
        `advanced`), then what each following form asks (TLS, the CA's upload id, protocol)."""
        start = {"handler": "mqtt", "show_advanced_options": advanced}
        step = self.request("POST", "/api/config/config_entries/flow", start)
        flow = step["flow_id"]
        for form in forms:
            assert step.get("type") == "form", step
            step = self.request("POST", f"/api/config/config_entries/flow/{flow}", form)
            assert not step.get("errors"), step
        assert step.get("type") == "create_entry", step
        return step

    def upload(self, path: Path) -> str:
        """A file for a config flow's file selector (`POST /api/file_upload`): its id."""
        boundary = "splitmq-test-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Authorization": f"Bearer {self.token}",
                   "Content-Type": f"multipart/form-data; boundary={boundary}"}  # fmt: skip
        call = urllib.request.Request(f"{self.url}/api/file_upload", body, headers, method="POST")
        with urllib.request.urlopen(call, timeout=30) as response:
            file_id: str = json.loads(response.read())["file_id"]
            return file_id

    def states(self) -> dict[str, dict[str, Any]]:
        """`/api/states` by entity id."""
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def websocket(self, message: dict[str, Any]) -> Any:
        url = f"ws://127.0.0.1:{self.port}/api/websocket"
        command = [str(self.venv / "bin" / "python"), "-c", WEBSOCKET_SCRIPT, url, self.token,
                   json.dumps(message)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def devices(self) -> list[dict[str, Any]]:
        """Home Assistant's device registry."""
        devices: list[dict[str, Any]] = self.websocket({"type": "config/device_registry/list"})
        return devices
