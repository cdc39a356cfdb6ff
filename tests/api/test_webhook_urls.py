"""webhook_url at submission: accepted and shown on the task; refused with a field error when webhooks are
off or the target is one the SSRF guard (WEBHOOK_URL_ALLOWLIST) does not allow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from comfyjobs.api.app import create_app
from comfyjobs.settings import Settings
from tests.webhooks.test_dispatcher import SECRET


@pytest.fixture
def hooked(settings: Settings) -> Iterator[TestClient]:
    update = {"webhook_secret": SecretStr(SECRET), "webhook_url_allowlist": "127.0.0.1"}
    with TestClient(create_app(settings.model_copy(update=update))) as client:
        yield client


def field_problem(resp_json: dict[str, object]) -> str:
    error = resp_json["error"]
    assert isinstance(error, dict)
    fields = {p["field"]: p["reason"] for p in error["fields"]}
    return str(fields["webhook_url"])


def test_a_task_keeps_its_webhook_url(hooked: TestClient) -> None:
    url = "http://127.0.0.1:9/hook"
    by_body = hooked.post(
        "/generate", json={"workflow_id": "tiny", "params": {"color": 1}, "webhook_url": url}
    )
    by_query = hooked.post("/workflows/tiny", params={"webhook_url": url}, json={"color": 2})
    assert (by_body.status_code, by_query.status_code) == (202, 202)
    for accepted in (by_body, by_query):
        task = hooked.get(f"/tasks/{accepted.json()['task_id']}").json()
        assert (task["webhook_url"], task["webhook"]) == (url, None)  # nothing delivered yet


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3/hook", "a private address"),
        ("http://169.254.169.254/latest", "a link-local address"),
        ("ftp://example.com/x", "only http and https"),
        ("http://user:pw@127.0.0.1/x", "user name or password"),
    ],
)
def test_a_target_the_guard_refuses_is_a_field_error(hooked: TestClient, url: str, reason: str) -> None:
    resp = hooked.post("/workflows/tiny", params={"webhook_url": url}, json={"color": 1})
    assert resp.status_code == 422
    problem = field_problem(resp.json())
    assert reason in problem
    if "address" in reason:
        assert "WEBHOOK_URL_ALLOWLIST" in problem


def test_webhooks_off_without_a_secret(client: TestClient) -> None:
    resp = client.post("/generate", json={"workflow_id": "tiny", "webhook_url": "https://example.com/h"})
    assert resp.status_code == 422
    assert "WEBHOOK_SECRET" in field_problem(resp.json())


def test_a_bad_secret_fails_at_start() -> None:
    with pytest.raises(Exception, match="whsec_"):
        Settings.load(webhook_secret="not-a-secret")
