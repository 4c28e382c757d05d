"""Auth: LibreChat's JWTs (EdDSA and RS256, iss/aud/exp checked, sub = user), open mode, and
per-user scoping of files for verified users."""

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.liveserver import CANARY_KEY, Client, LiveServer


def pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys():
    return {"ed": ed25519.Ed25519PrivateKey.generate(), "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


@pytest.fixture(scope="module")
def jwt_server(keys, tmp_path_factory):
    folder = tmp_path_factory.mktemp("jwt")
    (folder / "ed.pem").write_bytes(pem(keys["ed"].public_key()))
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"].public_key()))
    (folder / "jwks.json").write_text(json.dumps({"keys": [{**rsa_jwk, "kid": "lc-codeapi-2026-05", "use": "sig", "alg": "RS256"}]}))
    # The shared key too: LibreChat deployments in transition send both kinds of credential.
    live = LiveServer(SANDBOX_API_KEY=CANARY_KEY, SANDBOX_JWT_PUBLIC_KEY_FILE=str(folder / "ed.pem"),
                      SANDBOX_JWT_JWKS_FILE=str(folder / "jwks.json")).start()
    yield live
    live.stop()


def token(keys, sub="user-a", alg="EdDSA", **claims):
    now = int(time.time())
    body = {"iss": "librechat", "aud": "codeapi", "sub": sub, "iat": now, "nbf": now, "exp": now + 300,
            "jti": str(uuid.uuid4()), "tenant_id": "legacy", "role": "USER", **claims}
    key = keys["ed"] if alg == "EdDSA" else keys["rsa"]
    headers = {"kid": "lc-codeapi-2026-05"} if alg == "RS256" else {"kid": "unknown-kid"}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def bearer(server, value):
    return Client(server, headers={"Authorization": f"Bearer {value}"})


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_valid_jwt_is_accepted(jwt_server, keys, alg):
    response = bearer(jwt_server, token(keys, alg=alg)).post("/exec", json={"lang": "py", "code": "print(1)"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("change", [{"exp": int(time.time()) - 60}, {"aud": "other"}, {"iss": "evil"}])
def test_bad_claims_are_401(jwt_server, keys, change):
    response = bearer(jwt_server, token(keys, **change)).post("/exec", json={"lang": "py", "code": "print(1)"})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_unsigned_and_foreign_tokens_are_401(jwt_server, keys):
    unsigned = jwt.encode({"sub": "x", "iss": "librechat", "aud": "codeapi", "exp": int(time.time()) + 60}, None, algorithm="none")
    foreign = jwt.encode({"sub": "x", "iss": "librechat", "aud": "codeapi", "exp": int(time.time()) + 60},
                         ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
    for value in (unsigned, foreign, "not.a.jwt", ""):
        assert bearer(jwt_server, value).post("/exec", json={"lang": "py", "code": "1"}).status_code == 401
    assert Client(jwt_server, headers={}).post("/exec", json={"lang": "py", "code": "1"}).status_code == 401


def test_files_are_scoped_to_the_verified_user(jwt_server, keys):
    alice, bob = bearer(jwt_server, token(keys, "alice")), bearer(jwt_server, token(keys, "bob"))
    up = alice.post("/upload", data={"kind": "user", "id": "alice"}, files={"file": ("a.txt", b"alice's")}).json()
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    assert alice.get(f"/download/{sid}/{fid}").content == b"alice's"
    assert bob.get(f"/download/{sid}/{fid}").status_code == 403
    assert bob.get(f"/files/{sid}?detail=full").json() == []
    refused = bob.post("/exec", json={"lang": "bash", "code": "cat a.txt", "files": [{"id": fid, "storage_session_id": sid, "name": "a.txt"}]})
    assert refused.status_code == 403 and refused.json()["error"] == "Unauthorized file reference"
    # an agent's files are shared with every user of the agent
    shared = alice.post("/upload", data={"kind": "agent", "id": "agent-1"}, files={"file": ("s.txt", b"shared")}).json()
    assert bob.get(f"/download/{shared['session_id']}/{shared['files'][0]['fileId']}").content == b"shared"


def test_only_the_owner_deletes_a_file(jwt_server, keys):
    alice, bob = bearer(jwt_server, token(keys, "alice")), bearer(jwt_server, token(keys, "bob"))
    for kind in ("agent", "skill", "user"):
        up = alice.post("/upload", data={"kind": kind, "id": "agent-1"}, files={"file": ("s.txt", b"mine")}).json()
        sid, fid = up["session_id"], up["files"][0]["fileId"]
        for route in (f"/files/{sid}/{fid}", f"/sessions/{sid}/objects/{fid}"):
            response = bob.delete(route)
            assert response.status_code == 403, (kind, route, response.text)
        assert alice.get(f"/download/{sid}/{fid}").content == b"mine"
        assert alice.delete(f"/files/{sid}/{fid}").status_code == 200
        assert alice.get(f"/download/{sid}/{fid}").status_code == 404


def test_files_without_a_user_are_not_every_jwt_users(jwt_server, keys):
    # Uploaded with the shared key and no User-Id header: nobody's in particular, so no
    # verified user may read, list, use or delete them (the key holder still may).
    server_side = Client(jwt_server)
    up = server_side.post("/upload", files={"file": ("n.txt", b"nobody's")}).json()
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    mallory = bearer(jwt_server, token(keys, "mallory"))
    assert mallory.get(f"/download/{sid}/{fid}").status_code == 403
    assert mallory.get(f"/sessions/{sid}/objects/{fid}").status_code == 403
    assert mallory.get(f"/files/{sid}?detail=full").json() == []
    used = mallory.post("/exec", json={"lang": "bash", "code": "cat n.txt", "files": [{"id": fid, "storage_session_id": sid, "name": "n.txt"}]})
    assert used.status_code == 403
    assert mallory.delete(f"/files/{sid}/{fid}").status_code == 403
    assert server_side.get(f"/download/{sid}/{fid}").content == b"nobody's"


def test_open_mode_needs_no_credentials():
    live = LiveServer(SANDBOX_API_KEY="", SANDBOX_AUTH_OPEN="true").start()
    try:
        assert Client(live, headers={}).post("/exec", json={"lang": "py", "code": "print(1)"}).status_code == 200
    finally:
        live.stop()


def test_no_credential_configured_refuses_everything():
    live = LiveServer(SANDBOX_API_KEY="").start()
    try:
        response = Client(live, headers={"X-API-Key": "anything"}).post("/exec", json={"lang": "py", "code": "print(1)"})
        assert response.status_code == 401 and "no credential configured" in response.json()["message"]
    finally:
        live.stop()


@pytest.mark.parametrize("alg", ["HS256", "HS512", "ES256", "PS256", "none", "RS256", "EdDSA"])
def test_tokens_naming_an_algorithm_the_key_cannot_verify_are_401(jwt_server, keys, alg):
    # PyJWT raises TypeError (not a PyJWTError) when an HMAC or EC token meets an Ed25519 or RSA key.
    import base64

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    forged = ".".join([part({"alg": alg, "typ": "JWT"}), part({"iss": "librechat", "aud": "codeapi", "sub": "x", "exp": now + 60}), "c2ln"])
    for kid in ("lc-codeapi-2026-05", None):
        head = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
        forged = ".".join([part(head), forged.split(".")[1], "c2ln"])
        response = bearer(jwt_server, forged).post("/exec", json={"lang": "py", "code": "print(1)"})
        assert response.status_code == 401, (alg, kid, response.status_code, response.text)
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("sub", ["", "   ", 7, None, ["a"], {"a": 1}])
def test_tokens_without_a_usable_subject_are_401(jwt_server, keys, sub):
    response = bearer(jwt_server, token(keys, sub=sub)).get("/files/AAAAAAAAAAAAAAAAAAAAA?detail=summary")
    assert response.status_code == 401, (sub, response.text)


def test_a_programmatic_run_belongs_to_the_user_who_started_it(jwt_server, keys):
    from tests.api.test_programmatic import WEATHER, tools_answer

    alice, bob = bearer(jwt_server, token(keys, sub="alice")), bearer(jwt_server, token(keys, sub="bob"))
    request_id = str(uuid.uuid4())
    waiting = alice.post("/exec/programmatic", json={"code": "r = await get_weather(city='x')\nprint(r['city'])",
                                                     "tools": [WEATHER], "timeout": 8000},
                         headers={"X-LibreChat-Code-Request-ID": request_id}).json()
    assert waiting["status"] == "tool_call_required", waiting
    results = [tools_answer(c) for c in waiting["tool_calls"]]
    stolen = bob.post("/exec/programmatic", json={"continuation_token": waiting["continuation_token"], "tool_results": results})
    assert stolen.status_code == 403, stolen.text  # as the official service answers
    assert bob.post("/exec/programmatic/cancel", json={"request_id": request_id}).status_code == 403
    shared_key = Client(jwt_server, headers={"X-API-Key": CANARY_KEY})  # another method: another owner
    assert shared_key.post("/exec/programmatic/cancel", json={"request_id": request_id}).status_code == 403
    final = alice.post("/exec/programmatic", json={"continuation_token": waiting["continuation_token"], "tool_results": results})
    assert final.status_code == 200 and final.json()["stdout"] == "x\n", final.text
