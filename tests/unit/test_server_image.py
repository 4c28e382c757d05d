"""The server image (docker/Dockerfile) holds what .dockerignore lets into its context: every
Django app of this repository must be there, or the containerised server cannot start (the
compose stage found `programmatic` and `runtime_sessions` missing once), and so must the one
file of the executor image the server loads itself (the programmatic runner's name rule)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent.parent


def image_paths() -> set[str]:
    return {line[1:].strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}


def test_every_app_of_the_repository_is_in_the_image():
    ours = {app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()}
    assert ours, settings.INSTALLED_APPS
    assert ours | {"sandbox_project", "manage.py"} <= image_paths(), sorted(ours - image_paths())


def test_the_runner_file_the_server_loads_is_in_the_image():
    from programmatic import service

    loaded = Path(service._spec.origin).resolve().relative_to(ROOT)
    assert str(loaded) in image_paths(), loaded


def test_what_the_image_lists_exists():
    missing = [path for path in image_paths() if not (ROOT / path).exists() and not path.startswith("docker/.build/")]
    assert not missing, missing
