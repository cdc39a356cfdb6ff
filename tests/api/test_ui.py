"""GET /ui: the web app's static pages, open without a key (they hold no data), under a strict CSP."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_pages_are_served_without_a_key_under_a_strict_csp(keyed: TestClient) -> None:
    page = keyed.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script type="module" src="/ui/static/playground.js">' in page.text
    script = keyed.get("/ui/static/playground.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert keyed.get("/ui/config").json() == {"keys_required": True, "max_priority": 9, "default_priority": 5}
    assert keyed.get("/workflows").status_code == 401  # (the data still needs the key)


def test_only_the_apps_own_files_are_served(keyed: TestClient) -> None:
    assert keyed.get("/ui/static/nothing.js").status_code == 404
    assert keyed.get("/ui/static/..%2F__init__.py").status_code == 404
    assert keyed.post("/ui").status_code == 401  # only GET and HEAD are open


def test_with_auth_off_the_pages_ask_for_no_key(client: TestClient) -> None:
    assert client.get("/ui/config").json()["keys_required"] is False
