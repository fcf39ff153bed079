"""benchmarks/bench_gpu.py in its reduced CPU mode (tiny backbone), so that the GPU benchmark does not rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reduced_mode_runs_and_writes_json(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "bench.json"
    result = bench.main(["--reduced", "--out", str(out), "--threads", "1"])
    saved = json.loads(out.read_text())
    assert [r["batch"] for r in saved["training"]] == [1, 2]
    for row in saved["training"]:
        assert row["lora"] and row["checkpointing"] and 0 < row["trainable"] < row["parameters"]
        assert row["step_ms"] > 0 and row["samples_per_s"] > 0
    inference = saved["inference"]
    assert inference["niaf_ms"] > 0 and inference["backbone_ms"] > 0 and inference["pi0_ms"] > 0
    assert inference["niaf_over_pi0"] == pytest.approx(inference["niaf_ms"] / inference["pi0_ms"])
    assert result["inference"]["queries"] == 3 * (8 + 1)
    printed = capsys.readouterr().out
    assert "NIAF/pi0" in printed and "samples/s" in printed


def test_memory_estimate_is_consistent():
    bench = _bench()
    full8 = bench.estimate_memory("smolvlm-256m", 8, lora=False)
    lora8 = bench.estimate_memory("smolvlm-256m", 8, lora=True)
    lora32 = bench.estimate_memory("smolvlm-256m", 32, lora=True)
    assert full8["static_bytes"] == 16 * full8["parameters"]  # fp32 weights + grads + AdamW moments
    assert lora8["static_bytes"] < full8["static_bytes"] / 4
    assert lora32["activation_bytes"] == pytest.approx(4 * lora8["activation_bytes"])
    assert bench.smallest_gpu(10e9).startswith("24 GB") and bench.smallest_gpu(1e12).startswith("FSDP")
