"""A web page in a user's browser cannot use this server, whatever the auth mode.

A page can send a "simple" cross-origin request (a form post, text/plain) without a CORS
preflight, and DNS rebinding makes a page's own host name resolve to this server. So: /exec
takes JSON only (415 for anything else), the server answers only to its own host names (its
bound address, localhost, and what DJANGO_ALLOWED_HOSTS adds), and any API request that carries
a foreign Origin header is refused. Checked in open mode, the mode where nothing else stands
in the way.
"""

import pytest
import requests

from tests.liveserver import Client, LiveServer


@pytest.fixture(scope="module")
def open_server():
    live = LiveServer(SANDBOX_API_KEY="", SANDBOX_AUTH_OPEN="true").start()
    yield live
    live.stop()


@pytest.mark.parametrize("content_type,body", [
    ("text/plain", '{"lang":"bash","code":"echo pwned"}'),
    ("application/x-www-form-urlencoded", "lang=bash&code=echo+pwned"),
    ("multipart/form-data; boundary=B", '--B\r\nContent-Disposition: form-data; name="lang"\r\n\r\nbash\r\n--B--\r\n'),
])
def test_a_form_or_text_post_never_runs_code(open_server, content_type, body):
    response = requests.post(open_server.url + "/v1/exec", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert response.status_code == 415, response.text
    assert "pwned" not in response.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "sandbox.attacker.test:3081"])
def test_a_foreign_host_name_is_refused(open_server, host):
    for method, route in (("GET", "/v1/files/AAAAAAAAAAAAAAAAAAAAA?detail=full"), ("GET", "/health"),
                          ("POST", "/v1/exec")):
        response = requests.request(method, open_server.url + route, headers={"Host": host}, json={"lang": "bash", "code": "echo x"},
                                    timeout=10)
        assert response.status_code == 400, (host, route, response.text)
        assert response.json()["error"] == "bad_request"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_the_servers_own_names_are_answered(open_server, host):
    response = requests.get(open_server.url + "/health", headers={"Host": f"{host}:{open_server.port}"}, timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example", "https://localhost.attacker"])
def test_a_foreign_origin_is_refused_on_every_api_route(open_server, origin):
    client = Client(open_server, headers={"Origin": origin})
    for method, route, body in (("POST", "/exec", {"lang": "bash", "code": "echo pwned"}),
                                ("GET", "/files/AAAAAAAAAAAAAAAAAAAAA?detail=full", None),
                                ("GET", "/download/AAAAAAAAAAAAAAAAAAAAA/AAAAAAAAAAAAAAAAAAAAA", None)):
        response = client.request(method, route, json=body)
        assert response.status_code == 403, (origin, route, response.text)
        assert response.json()["error"] == "forbidden_origin"


def test_the_servers_own_origin_is_fine(open_server):
    client = Client(open_server, headers={"Origin": f"http://127.0.0.1:{open_server.port}"})
    assert client.exec("bash", "echo ok")["stdout"] == "ok\n"


def test_named_hosts_are_added_to_the_defaults():
    live = LiveServer(DJANGO_ALLOWED_HOSTS="sandbox,code.example.org").start()
    try:
        for host, status in (("sandbox:3081", 200), ("code.example.org", 200), ("localhost", 200), ("other.example", 400)):
            response = requests.get(live.url + "/health", headers={"Host": host}, timeout=10)
            assert response.status_code == status, (host, response.text)
    finally:
        live.stop()
