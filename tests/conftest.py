"""Test-wide settings: offline, CPU, deterministic, small thread pool."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures (real data files; never copied into the repo)."""
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):  # CI clones sit next to shared/: a missing folder must not pass as skips
            pytest.fail(f"shared fixtures not found at {FIXTURES} (CI expects ../shared beside the checkout)")
        pytest.skip(f"shared fixtures not found at {FIXTURES} (they live in ../shared beside the checkout)")
    return FIXTURES
