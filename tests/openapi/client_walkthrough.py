"""Generates a Python client from Herald's served OpenAPI document with
openapi-python-client (default settings but for NDJSON, read as bytes; warnings
are failures) and drives the
README walkthrough through it: create a campaign, add contacts as JSON, import
a CSV file, list, activate, send, follow the task, read the statistics, and
read a problem document.

Usage: client_walkthrough.py BASE_URL TOKEN CAMPAIGN_JSON, where CAMPAIGN_JSON
is {"window": {timezone, send_window_start, send_window_end, send_days}}, a
window open now. Exits non-zero (an assertion) on the first difference.
"""

import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from http import HTTPStatus
from pathlib import Path


def generate(base_url: str, into: Path):
    """The generated package, imported."""
    document = into / "openapi.json"
    with urllib.request.urlopen(f"{base_url}/api/v1/openapi.json") as response:
        document.write_bytes(response.read())
    # The generator formats its output with ruff, installed beside it.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    # The one setting: the consent export is NDJSON, a media type the generator
    # does not know; it is told to hand it over as bytes.
    config = into / "generator.json"
    config.write_text(json.dumps({"content_type_overrides": {"application/x-ndjson": "application/octet-stream"}}))
    subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
         "--output-path", str(into / "herald_client"), "--meta", "none", "--fail-on-warning",
         "--config", str(config)],
        check=True,
        env=env,
    )
    sys.path.insert(0, str(into))
    return importlib.import_module("herald_client")


def expect(response, status: HTTPStatus):
    """The parsed body of a response that must have `status`."""
    assert response.status_code == status, (response.status_code, response.content)
    return response.parsed


def walkthrough(base_url: str, token: str, window: dict) -> None:
    from herald_client import AuthenticatedClient
    from herald_client.api.campaigns import create_campaign, get_campaign_stats, list_campaigns, update_campaign
    from herald_client.api.contacts import add_contacts, import_contacts, list_contacts
    from herald_client.api.sending import get_task, send_campaign
    from herald_client.models import (
        AddContacts, CampaignInput, ImportUpload, ListCampaignsStatus, NewCampaign, NewCampaignSendDaysType0Item,
        NewCampaignTimezone, NewContactBody, NewContactBodyAttributes, Problem, Status,
    )
    from herald_client.types import File

    # Undocumented statuses raise instead of parsing as None.
    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

    campaign = expect(create_campaign.sync_detailed(client=client, body=NewCampaign(
        name="Spring sale",
        message_template='Hi {{first_name | default:"there"}}, 20% off in {{city | default:"town"}} today!',
        timezone=NewCampaignTimezone(window["timezone"]),
        daily_limit=200,
        send_window_start=window["send_window_start"],
        send_window_end=window["send_window_end"],
        send_days=[NewCampaignSendDaysType0Item(day) for day in window["send_days"]],
    )), HTTPStatus.CREATED)
    assert campaign.status == Status.DRAFT, campaign

    attributes = NewContactBodyAttributes.from_dict({"first_name": "Ada", "city": "Chicago"})
    added = expect(add_contacts.sync_detailed(campaign.id, client=client, body=AddContacts(contacts=[
        NewContactBody(phone_number="+15551230001", name="Ada Lovelace", attributes=attributes),
        NewContactBody(phone_number="+15551230002", name="Alan Turing"),
    ])), HTTPStatus.CREATED)
    assert (added.added, added.duplicates, added.total_contacts) == (2, 0, 2), added

    csv = b"phone,name,first_name,city\n555-123-0003,Grace Hopper,Grace,Arlington\n12345,Bad Row,,\n+15551230001,Ada again,,\n"
    upload = ImportUpload(file=File(payload=io.BytesIO(csv), file_name="contacts.csv", mime_type="text/csv"))
    imported = expect(import_contacts.sync_detailed(campaign.id, client=client, body=upload), HTTPStatus.CREATED)
    assert (imported.imported, imported.duplicates, imported.errors, imported.total_contacts) == (1, 1, 1, 3), imported
    assert imported.error_details == ['line 3: invalid phone number "12345"'], imported

    drafts = expect(list_campaigns.sync_detailed(client=client, per_page=5, status=ListCampaignsStatus.DRAFT), HTTPStatus.OK)
    assert [c.id for c in drafts.campaigns] == [campaign.id], drafts
    contacts = expect(list_contacts.sync_detailed(campaign.id, client=client), HTTPStatus.OK)
    phones = [c.phone_number for c in contacts.contacts]
    assert phones == ["+15551230001", "+15551230002", "+15551230003"], phones

    active = expect(update_campaign.sync_detailed(campaign.id, client=client, body=CampaignInput(status=Status.ACTIVE)), HTTPStatus.OK)
    assert active.status == Status.ACTIVE, active
    stats = expect(get_campaign_stats.sync_detailed(campaign.id, client=client), HTTPStatus.OK)
    assert (stats.total_contacts, stats.messages_sent, stats.delivery_rate) == (3, 0, 0.0), stats

    accepted = expect(send_campaign.sync_detailed(campaign.id, client=client), HTTPStatus.ACCEPTED)
    assert (accepted.message, accepted.queued, accepted.scheduled_for) == ("Campaign sending initiated", 3, None), accepted
    deadline = time.monotonic() + 60
    while (task := expect(get_task.sync_detailed(accepted.task_id, client=client), HTTPStatus.OK)).status != "completed":
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    assert (task.queued, task.sent, task.failed, task.pending) == (3, 3, 0, 0), task
    stats = expect(get_campaign_stats.sync_detailed(campaign.id, client=client), HTTPStatus.OK)
    assert (stats.messages_sent, stats.messages_pending, stats.success_rate) == (3, 0, 1.0), stats

    refused = expect(update_campaign.sync_detailed(campaign.id, client=client, body=CampaignInput(message_template="changed")), HTTPStatus.BAD_REQUEST)
    assert isinstance(refused, Problem), refused
    assert refused.detail == "the message templates and A/B split of an active campaign cannot change; pause it first", refused


def main() -> int:
    base_url, token, campaign = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with tempfile.TemporaryDirectory() as into:
        generate(base_url, Path(into))
        walkthrough(base_url, token, campaign["window"])
    print("the generated client drove the walkthrough")
    return 0


if __name__ == "__main__":
    sys.exit(main())
