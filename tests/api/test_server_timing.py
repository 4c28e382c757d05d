"""The Server-Timing header: where an /exec spent its time, for operators and bench/suite.py."""

import re

PHASE = re.compile(r"^([a-z]+);dur=(\d+\.\d)$")


def phases(response) -> dict[str, float]:
    found: dict[str, float] = {}
    for part in response.headers["Server-Timing"].split(", "):
        match = PHASE.match(part)
        assert match, part
        found[match[1]] = found.get(match[1], 0.0) + float(match[2])
    return found


def test_exec_reports_its_phases(api):
    response = api.post("/exec", json={"lang": "py", "code": "import time\ntime.sleep(0.3)\nprint(1)"})
    assert response.status_code == 200, response.text
    found = phases(response)
    assert {"slot", "session", "claim", "prime", "run", "collect", "release", "audit", "app"} <= set(found), found
    assert found["run"] >= 300  # the program slept that long inside the run phase
    assert found["app"] >= found["run"]


def test_every_response_carries_the_whole_app_time(api):
    response = api.get("/files/AAAAAAAAAAAAAAAAAAAAA")
    assert set(phases(response)) == {"app"}
    refused = api.post("/exec", json={"lang": "cobol", "code": ""})
    assert refused.status_code == 400 and "app" in phases(refused)
