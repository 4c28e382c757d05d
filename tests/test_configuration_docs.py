"""docs/CONFIGURATION.md lists every environment variable the settings read, and invalid
values stop start-up naming the variable."""

import re
import subprocess
import sys

from tests.liveserver import ROOT


def variables_read_by_settings() -> set[str]:
    source = (ROOT / "sandbox_project" / "settings.py").read_text()
    return set(re.findall(r'(?:c\.(?:integer|number|boolean|choice|text|pool_sizes)|db_url)\("([A-Z][A-Z0-9_]+)"', source))


def test_every_variable_is_documented():
    docs = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    names = variables_read_by_settings()
    assert len(names) > 40
    missing = sorted(name for name in names if f"`{name}`" not in docs)
    assert not missing, f"not in docs/CONFIGURATION.md: {missing}"


def test_invalid_values_name_the_variable():
    for name, value in [("SANDBOX_MEMORY_MB", "lots"), ("SANDBOX_DOCKER_RUNTIME", "kata"), ("SANDBOX_LOG_LEVEL", "loud"),
                        ("SANDBOX_AUTH_OPEN", "maybe"), ("SANDBOX_PORT", "70000")]:
        done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", name: value})
        assert done.returncode != 0
        assert name in done.stderr, done.stderr[-500:]
