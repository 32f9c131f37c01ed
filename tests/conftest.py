"""Shared test helpers: where the project's shared documents are, and sample ids."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_dir() -> Path:
    """``../shared`` beside the checkout (or $ORCHESTRATOR_SHARED)."""
    return Path(os.environ.get("ORCHESTRATOR_SHARED", ROOT.parent / "shared"))


@pytest.fixture
def shared() -> Path:
    """The shared documents; in CI their absence fails the test instead of skipping it."""
    path = shared_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared documents not found at {path}")
        pytest.skip(f"shared documents not found at {path}")
    return path


def venv_python(variable: str, folder: str, what: str) -> str:
    """The interpreter of a separate environment ``.ci/run`` makes (``$variable`` may point
    elsewhere); in CI its absence fails the test instead of skipping it."""
    path = Path(os.environ.get(variable, ROOT / folder / "bin" / "python"))
    if not path.exists():
        message = f"{what} environment missing at {path} (.ci/run creates it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def component(module: str, what: str) -> Any:
    """Import a real component a test needs; in CI its absence fails the test module,
    elsewhere it is skipped with the reason."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{what} is not installed ({exc}): pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
