#!/usr/bin/env bash
# CI of the LeRobot plugin (lerobot_policy_niaf), called by .ci/run; also runnable by hand.
# Builds a Python 3.12 virtual environment from this repository's files (lerobot 0.6.1 needs Python >= 3.12),
# writes a tiny Meta-World LeRobot v3 dataset with the niaf package's own environment (the `python` on PATH,
# where .ci/run installed niaf[dev]), then runs the plugin's tests: discovery, strict save/load round trips with
# identical actions, the rollout side of select_action, niaf-data's `--camera-view lerobot` frames against LeRobot's
# Meta-World environment (pixel-exact), niaf's copy of LeRobot's Meta-World task strings (`--instructions lerobot`)
# against LeRobot's own, and lerobot-train + lerobot-eval on Meta-World reach-v3.
# The venv is cached in $NIAF_LEROBOT_VENV (default ~/.cache/niaf/venv-lerobot312); pip caches the wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
start=$(date +%s)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}" WANDB_MODE=disabled

# The first candidate that really runs Python 3.12 (a pyenv shim on PATH may exist and still refuse to run).
py312=""
for candidate in "${NIAF_PYTHON312:-}" "$(command -v python3.12 || true)" \
    "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
    py312="$candidate"; break
  fi
done
if [ -z "$py312" ]; then
  echo "integrations/lerobot/ci.sh: SKIPPED: no Python 3.12 interpreter found (lerobot 0.6 needs >= 3.12)." >&2
  exit 0
fi

venv="${NIAF_LEROBOT_VENV:-$HOME/.cache/niaf/venv-lerobot312}"
if [ ! -x "$venv/bin/python" ]; then
  "$py312" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c integrations/lerobot/constraints.txt \
  -e . -e "integrations/lerobot[metaworld,training,test]"
echo "lerobot venv ready after $(( $(date +%s) - start )) s: $venv"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# pixels + the 4-d agent_pos state, as LeRobot's own Meta-World datasets have; written by niaf-data in the niaf
# environment (its metaworld>=3.1.1 cannot share the LeRobot venv, whose [metaworld] extra pins 3.0.0)
niaf-data metaworld --tasks reach-v3 --episodes 3 --image-size 32 --state agent_pos --stride 1 --quiet \
  --out "$work/metaworld_reach"
export NIAF_LEROBOT_DATASET="$work/metaworld_reach"
"$venv/bin/python" -m pytest integrations/lerobot/tests -p no:cacheprovider -q
echo "integrations/lerobot/ci.sh: done in $(( $(date +%s) - start )) s"
