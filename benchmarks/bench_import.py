"""Import time of the deployment side (no torch) next to the model side and torch itself.

    python benchmarks/bench_import.py [--runs 7]

Each case runs in ``--runs`` fresh interpreters; the time of the import statements alone (interpreter start-up
excluded, numpy included where the case imports it first) is measured inside each, and the median is printed.
The deployment cases run with an import hook that refuses ``torch`` and ``transformers`` and check afterwards
that neither (nor ``configuration_niaf``) was imported.

Cases:
  * deployment: ``import modeling_niaf.numpy_function, modeling_niaf.runtime`` (torch and transformers blocked);
  * deployment via the package: ``from modeling_niaf import ActionStream, NumpyActionFunction`` (blocked);
  * numpy alone, for reference;
  * ``import torch``;
  * the model side: ``from modeling_niaf import NiafForActionFunction`` (torch + transformers + Auto-class
    registration: what every ``import modeling_niaf`` cost before the package became lazy).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCK = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(name + " is blocked")
        return None
sys.meta_path.insert(0, _Blocked())
"""

TIMED = """
import sys, time, json
start = time.perf_counter()
{statement}
elapsed = time.perf_counter() - start
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "transformers", "configuration_niaf"}})
print(json.dumps({{"seconds": elapsed, "heavy": heavy}}))
"""

CASES = [
    ("deployment modules, torch + transformers blocked", True,
     "import modeling_niaf.numpy_function, modeling_niaf.runtime"),
    ("deployment names via the package, blocked", True,
     "from modeling_niaf import ActionStream, NumpyActionFunction"),
    ("numpy alone", False, "import numpy"),
    ("import torch", False, "import torch"),
    ("model side: from modeling_niaf import NiafForActionFunction", False,
     "from modeling_niaf import NiafForActionFunction"),
]


def time_case(blocked: bool, statement: str, runs: int) -> tuple[float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    code = (BLOCK if blocked else "") + TIMED.format(statement=statement)
    seconds, heavy = [], []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"{statement!r} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        seconds.append(result["seconds"])
        heavy = result["heavy"]
    return statistics.median(seconds), heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per case (median printed)")
    args = parser.parse_args()
    print(f"median of {args.runs} fresh interpreters, import statements only (python {sys.version.split()[0]})")
    for label, blocked, statement in CASES:
        median, heavy = time_case(blocked, statement, args.runs)
        if blocked and heavy:
            raise SystemExit(f"{label}: imported {heavy}")
        loaded = f"  (loaded: {', '.join(heavy)})" if heavy else ""
        print(f"{label:<62} {median * 1e3:9.1f} ms{loaded}")


if __name__ == "__main__":
    main()
