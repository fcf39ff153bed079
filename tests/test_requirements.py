"""The declared version floors are the ones CI tests at, and the one the shipped code checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOORED = ("transformers", "huggingface_hub", "pillow", "datasets", "accelerate", "peft")


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["train"]
    floors = {}
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)>=([\d.]+)$", requirement.split(";")[0].strip())
        if match:
            floors[match[1].lower().replace("-", "_")] = match[2]
    return floors


def test_ci_floor_constraints_pin_the_declared_floors():
    pins = {}
    for line in (REPO / ".ci" / "floor-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("-", "_")] = version.strip()
    floors = _floors()
    assert set(pins) == set(FLOORED)
    assert {name: floors[name] for name in FLOORED} == pins
    script = (REPO / ".ci" / "run").read_text()
    assert "-c .ci/floor-constraints.txt" in script and '-m "not slow"' in script


def test_shipped_code_checks_the_declared_transformers_floor():
    from configuration_niaf.configuration_niaf import MIN_TRANSFORMERS_VERSION

    assert _floors()["transformers"] == MIN_TRANSFORMERS_VERSION
    # a bare environment needs Pillow for the processor: it is a core dependency, not only a [train] one
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(r.lower().startswith("pillow>=") for r in core)
