"""deploy/kubernetes/ cannot run here (no cluster); this checks that it agrees with the code:
every setting it sets is one the server reads and docs/CONFIGURATION.md lists, its probes hit
real routes, its images are the ones docker/build-images.sh and docker/compose.yml name, and
its parts refer to each other by the right names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.urls import Resolver404, resolve

from tests.test_configuration_docs import variables_read_by_settings

ROOT = Path(__file__).resolve().parent.parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"


def documents() -> list[dict]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def one(kind: str, **match) -> dict:
    matches = [d for d in documents() if d["kind"] == kind and all(d["metadata"].get(k) == v for k, v in match.items())]
    assert len(matches) == 1, (kind, match, [d["metadata"]["name"] for d in matches])
    return matches[0]


def deployment() -> dict:
    return one("Deployment", name="codeinterp")


def container() -> dict:
    (server,) = deployment()["spec"]["template"]["spec"]["containers"]
    return server


def test_the_parts_are_there():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in documents())
    assert kinds == sorted([
        ("ConfigMap", "codeinterp-config"), ("Deployment", "codeinterp"), ("PodDisruptionBudget", "codeinterp"),
        ("Secret", "codeinterp-secrets"), ("Service", "codeinterp"), ("Service", "codeinterp-objects"),
        ("Service", "codeinterp-postgres"),
    ])
    for name in ("codeinterp-postgres", "codeinterp-objects"):
        assert one("Service", name=name)["spec"]["type"] == "ExternalName"


def settings_set() -> dict[str, str]:
    values = {item["name"]: item.get("value") for item in container().get("env", [])}
    values.update(one("ConfigMap", name="codeinterp-config")["data"])
    values.update(one("Secret", name="codeinterp-secrets")["stringData"])
    return values


def test_every_setting_is_read_by_the_server_and_documented():
    docs = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    read = variables_read_by_settings()
    names = set(settings_set())
    assert len(names) > 10
    assert sorted(n for n in names if f"`{n}`" not in docs) == [], "not in docs/CONFIGURATION.md"
    assert sorted(n for n in names if n not in read) == [], "not read by sandbox_project/settings.py"


def test_config_comes_from_the_configmap_and_the_secret():
    sources = container()["envFrom"]
    assert {"configMapRef": {"name": "codeinterp-config"}} in sources
    assert {"secretRef": {"name": "codeinterp-secrets"}} in sources
    secret = one("Secret", name="codeinterp-secrets")["stringData"]
    # What must not be in a ConfigMap is in the Secret.
    for name in ("SANDBOX_API_KEY", "DATABASE_URL", "SANDBOX_S3_SECRET_ACCESS_KEY", "DJANGO_SECRET_KEY"):
        assert name in secret
    assert settings_set()["DATABASE_URL"].startswith("postgres://") and "@codeinterp-postgres:" in settings_set()["DATABASE_URL"]
    assert "//codeinterp-objects:" in settings_set()["SANDBOX_S3_ENDPOINT_URL"]
    assert settings_set()["SANDBOX_STORAGE_BACKEND"] == "s3"


def test_probes_hit_real_routes_on_the_served_port():
    server = container()
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": int(settings_set()["SANDBOX_PORT"])}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = server[probe]["httpGet"]
        assert http["port"] in ports, probe
        try:
            match = resolve(http["path"])
        except Resolver404:
            pytest.fail(f"{probe} asks {http['path']}, which is no route")
        assert match.route in ("health", "health/live"), (probe, match.route)
    # Readiness is the full check (503 while draining or without a database), liveness is not.
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health/live"
    service = one("Service", name="codeinterp")
    assert service["spec"]["ports"][0]["targetPort"] in ports


def default_in(text: str, variable: str) -> str:
    found = re.search(r"\$\{" + variable + r":-([^}]+)\}", text)
    assert found, variable
    return found.group(1)


def test_images_are_the_ones_the_build_makes():
    build = (ROOT / "docker" / "build-images.sh").read_text()
    build_executor = (ROOT / "docker" / "build-executor.sh").read_text()
    compose = (ROOT / "docker" / "compose.yml").read_text()
    server_image = default_in(build, "SANDBOX_SERVER_IMAGE")
    assert server_image == default_in(compose, "SANDBOX_SERVER_IMAGE")
    assert container()["image"] == server_image
    executor_image = settings_set()["SANDBOX_DOCKER_IMAGE"]
    assert executor_image == default_in(build_executor, "SANDBOX_DOCKER_IMAGE") == default_in(compose, "SANDBOX_DOCKER_IMAGE")
    from django.conf import settings

    assert executor_image == settings.SANDBOX_DOCKER_IMAGE  # the server's own default
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"EXPOSE {settings_set()['SANDBOX_PORT']}" in dockerfile
    assert "sandbox_project.serve" in dockerfile and "manage.py migrate" in (ROOT / "docker" / "server-entrypoint.sh").read_text()
    assert (ROOT / "docker" / "Dockerfile.executor").is_file()


def test_node_privileges_are_the_ones_the_sandboxes_need():
    spec = deployment()["spec"]["template"]["spec"]
    server = container()
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    data_dir = settings_set()["SANDBOX_DATA_DIR"]
    # The node's engine binds the work areas by their node path: the same path in the pod,
    # and the tmpfs mounted there must reach the node (Bidirectional, which needs privileged).
    assert mounts["data"]["mountPath"] == volumes["data"]["hostPath"]["path"] == data_dir
    assert mounts["data"]["mountPropagation"] == "Bidirectional" and server["securityContext"]["privileged"] is True
    assert volumes["docker-socket"]["hostPath"]["path"] == mounts["docker-socket"]["mountPath"] == "/var/run/docker.sock"
    assert mounts["cgroup"]["mountPath"] == "/sys/fs/cgroup" and spec["hostPID"] is True
    assert not spec.get("hostNetwork"), "the sandboxes have no network; the server needs no host network"
    # One replica per node: its data dir, uid range and capacity are the node's.
    term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert deployment()["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_termination_grace_covers_the_drain():
    from django.test import override_settings

    from sandbox_project import front

    delay = int(settings_set()["SANDBOX_DRAIN_DELAY_S"])
    with override_settings(SANDBOX_QUEUE_TIMEOUT_MS=30000, SANDBOX_COMPILE_TIMEOUT_MS=30000, SANDBOX_TIMEOUT_MS=30000,
                           SANDBOX_LEASE_MARGIN_MS=30000):  # the documented defaults
        longest = front.request_timeout_s()
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= delay + longest


def test_selectors_match_the_pods():
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("Service", name="codeinterp")["spec"]["selector"].items() <= labels.items()
    pdb = one("PodDisruptionBudget", name="codeinterp")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 and deployment()["spec"]["replicas"] >= 2
