"""``inferlab alerts`` as a user meets it: a clear line when there are none, ``--follow`` that
says so and exits when the platform goes away, and the SDK's ``alerts()`` replaying what a late
subscriber missed (README: "a late subscriber replays what it missed")."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.registry.service import RegistryService
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import ConversionFailedAlert
from shared.contracts.base import new_id
from shared.embedded import EmbeddedNats
from shared.sdk import Client
from tests.support.cli import INFERLAB, cli, cli_env
from tests.support.services import REPO, running


def _alert(name: str) -> ConversionFailedAlert:
    return ConversionFailedAlert(
        event_id=new_id(),
        severity="warning",
        name=name,
        summary=f"{name}@1.0.0 fp16 failed parity",
        ref=f"{name}@1.0.0",
        profile="fp16",
        reason="parity_failed",
    )


async def test_no_alerts_is_said_and_a_late_subscriber_replays(settings: Settings, client: Client) -> None:
    async with running(settings, RegistryService):
        rc, out, err = await cli(settings, "alerts")
        assert rc == 0, err
        assert "no alerts stored on alerts.>" in out

        await client.bus.publish(subjects.alert("conversion", "failed", "late"), _alert("late"))
        # subscribed after the alert was published: the default replays it
        first = await asyncio.wait_for(anext(aiter(client.alerts())), 10)
        assert first.message.name == "late"
        # new ones only, on request: nothing stored is delivered
        assert [e async for e in client.alerts(replay=False, idle_timeout=0.5)] == []
        rc, out, _ = await cli(settings, "alerts")
        assert rc == 0 and "late@1.0.0 fp16 failed parity" in out and "no alerts" not in out


@pytest.mark.fault
async def test_follow_exits_non_zero_when_the_platform_goes_away(settings: Settings, nats_server: EmbeddedNats) -> None:
    async with running(settings, RegistryService):
        pass  # the streams exist
    proc = await asyncio.create_subprocess_exec(
        INFERLAB, "alerts", "--follow", "--lost-after", "2", cwd=REPO, env=cli_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert b"no alerts stored on alerts.>; waiting for new alerts" in line
    nats_server.stop()
    stopped = time.monotonic()
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, (out, err)
    assert b"lost the connection to NATS" in err and b"Traceback" not in err
    assert time.monotonic() - stopped < 15  # said within the grace period, not never
