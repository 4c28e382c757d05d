"""The backend contract is declared once (executor/backends/base.py: Backend, with its standing
and warm parts): every backend implements all of it, and the rest of the server asks a backend
for nothing else."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from executor.backends.base import Backend
from executor.backends.bwrap import BwrapBackend
from executor.backends.docker import DockerBackend

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = {"kill_overdue", "pool_forks", "pool_forked"}  # have defaults: backends whose sandboxes die with their worker; backends with no fork-server
CONTRACT = {name for name, _ in inspect.getmembers(Backend, inspect.isfunction) if not name.startswith("_")}


@pytest.mark.parametrize("backend", [DockerBackend, BwrapBackend])
def test_every_backend_implements_the_whole_contract(backend):
    missing = sorted(name for name in CONTRACT - OPTIONAL if getattr(backend, name) is getattr(Backend, name))
    assert missing == [], f"{backend.__name__} does not implement {missing}"


def test_callers_use_only_the_contract():
    """Every `get_backend().x` / `backend.x` outside executor/backends/ names a contract member."""
    used = set()
    for path in ROOT.glob("*/**/*.py"):
        # (storage/ has backends of its own: the file stores of storage/backends.py)
        if {".venv", "tests", "backends", "node_modules", "storage"} & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            target = node.value
            if (isinstance(target, ast.Call) and getattr(target.func, "id", "") == "get_backend") or \
                    (isinstance(target, ast.Name) and target.id == "backend"):
                used.add((node.attr, str(path.relative_to(ROOT))))
    declared = CONTRACT | {"pool_pipes_always"}
    assert {(name, where) for name, where in used if name not in declared} == set()
    assert len(used) >= 10  # the walk found the callers
