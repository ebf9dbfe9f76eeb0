"""Suite-wide settings: everything runs offline; no test may reach a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI keeps a disk cache in the user's cache folder by default: give every test its own,
    so no test writes into the real one and no test sees another's results."""
    folder = tmp_path_factory.mktemp("user-cache")
    monkeypatch.setenv("NODEGRAPH_CACHE_DIR", str(folder))
    monkeypatch.delenv("NODEGRAPH_CACHE_MAX_MB", raising=False)
    return folder
