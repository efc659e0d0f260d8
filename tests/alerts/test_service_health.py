"""A Microsoft incident named in an outage alert (issue 16): the sign-in poller reads each tenant's Microsoft 365
service health (Graph admin/serviceAnnouncement/issues, ServiceHealth.Read.All) and keeps the open issues on Exchange
Online and Microsoft Entra; an alert whose failure can be Microsoft's (a network or service code) names them, or says
none was open at the last read; other failures, and tenants whose service health was never read, say nothing of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mailwarden.alerts import messages
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.monitor import service_health
from mailwarden.monitor.alerting import make_dispatcher
from tests.monitor.signin_world import READER, sb, world  # noqa: F401 - the module sandbox and its tenants

HEALTH = [*READER, "ServiceHealth.Read.All"]
NOW = datetime.now(UTC)
# service health incidents are Microsoft's, read by every tenant: opened, closed and left open here
pytestmark = pytest.mark.fresh_sandbox("opens and closes Microsoft 365 service health incidents")


def _incident(code: str) -> Incident:
    return Incident(id=3, key=f"int:daemon:{code}", kind="single", code=code, tenant="t", members=[
        {"integration": "daemon", "check": "graph_mail", "status": "error", "code": code,
         "since": NOW.isoformat()}], affected=["daemon"], opened_at=NOW, status="open")


def _alert(w, code: str) -> messages.Message:
    rt = w.rt
    ctx = messages.Context(rt.config, {}, {}, make_dispatcher(rt.config, rt.store).service_health())
    return messages.render(Notice("opened", _incident(code), 1), ctx)


def test_an_open_exchange_incident_is_named_in_an_outage_alert(world):  # noqa: F811 - the fixture imported above
    w = world(integrations=("daemon",), monitor_roles=HEALTH, actors=False)
    w.ctl.open_incident("exchange", effect="none", title="Some users can't access mailboxes with Graph",
                                 issue_id="EX998877")
    w.ctl.open_incident("entra", effect="none", title="Delayed sign-ins", issue_id="AD112233")
    w.poll()
    doc = service_health.load(w.rt.store, w.tenant_id)
    assert doc["state"] == "ok" and {i["id"] for i in doc["issues"]} == {"EX998877", "AD112233"}

    alert = _alert(w, "service_unavailable")
    said = " ".join(alert.text.split())
    assert ('Microsoft 365 service health (tenant t, read ' in said and 'EX998877 "Some users can\'t access '
            'mailboxes with Graph" (Exchange Online, serviceDegradation, since ') in said, said
    assert "AD112233" in said and "Microsoft Entra" in said
    assert "EX998877" in alert.markdown
    # a failure that is not the service's (a removed consent) says nothing of Microsoft's incidents
    assert "service health (tenant" not in _alert(w, "consent_missing").text

    w.ctl.close_incident()  # both resolved: the next read says none is open
    w.poll()
    said = " ".join(_alert(w, "timeout").text.split())
    assert "listed no open incident on Exchange Online or Microsoft Entra (Microsoft may post one later); look " \
           "first between mailwarden and Microsoft" in said and "EX998877" not in said


@pytest.mark.parametrize("roles", [READER], ids=["without ServiceHealth.Read.All"])
def test_without_the_permission_alerts_say_nothing_of_service_health(world, roles):  # noqa: F811
    w = world(integrations=("daemon",), monitor_roles=roles, actors=False)
    w.ctl.open_incident("exchange", effect="none", title="Mail flow delays", issue_id="EX445566")
    w.poll()
    doc = service_health.load(w.rt.store, w.tenant_id)
    assert doc["state"] == "forbidden" and not doc.get("issues")
    assert "service health (tenant" not in _alert(w, "service_unavailable").text
    assert w.window("daemon").state == "ok"  # the sign-in log itself was read as before
    assert json.dumps(doc).count("EX445566") == 0
