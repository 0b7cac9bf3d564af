"""`splitmq broker init DIR --revoke NAME` against a running broker from that profile."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from broker.secure_profile import ProfileOptions
from mqtt_session.errors import BrokerConnectError
from splitmq.cli import main
from tests.support.secure_site import Probe, SecureSite, open_site

pytestmark = pytest.mark.integration


@pytest.fixture
def site() -> Iterator[SecureSite]:
    with open_site(ProfileOptions(devices=["cam-1"], workers=["w1", "w2"])) as made:
        yield made


def test_a_revoked_login_is_kicked_refused_and_disabled_in_the_profile(
    site: SecureSite, capsys: pytest.CaptureFixture[str]
) -> None:
    w2 = Probe(site.settings("w2"), "w2").start()
    directory = str(site.profile.directory)
    port = str(site.broker.port)
    assert main(["broker", "init", directory, "--revoke", "w2", "--port", port]) == 0
    assert "revoked worker w2" in capsys.readouterr().out
    with w2._changed:
        assert w2._changed.wait_for(lambda: w2.disconnects > 0, 5), "w2 was not kicked"
    w2.stop()
    with pytest.raises(BrokerConnectError):
        Probe(site.settings("w2"), "w2").start()
    Probe(site.settings("w1"), "w1").start().stop()  # the others stay
    stored = json.loads(site.profile.dynsec.read_text())
    w2_entry = next(c for c in stored["clients"] if c["username"] == "w2")
    assert w2_entry["disabled"] is True and w2_entry["roles"] == []
    # Revoking again changes nothing and still succeeds.
    assert main(["broker", "init", directory, "--revoke", "w2", "--port", port]) == 0


def test_revoking_an_unknown_login_fails_and_names_it(
    site: SecureSite, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(site.profile.directory)
    port = str(site.broker.port)
    assert main(["broker", "init", directory, "--revoke", "nobody", "--port", port]) != 0
    assert "nobody" in capsys.readouterr().err
