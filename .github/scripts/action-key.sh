#!/usr/bin/env bash
# gpu-runner action: where the private virtual environment and the pip cache go, the extras this
# mode needs, and the cache key (a hash of the action's pyproject.toml, with the runner's OS,
# architecture and Python version, and the extras: each set of packages keeps its own cache);
# and the runtime's Python: the job's own python3, found here, before the private environment exists.
set -euo pipefail

# The runtime under test is the job's Python (the container's, or the VM image's), not gpu-runner's.
runtime="${GPU_RUNNER_RUNTIME_PYTHON:-}"
if [ -z "$runtime" ]; then
  runtime=$(command -v python3 || command -v python || true)
fi
echo "runtime-python=$runtime" >>"$GITHUB_OUTPUT"

py="${GPU_RUNNER_VENV_PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
  echo "::error title=gpu-runner::no '$py' here: gpu-runner needs Python 3.10 or newer with venv (input 'python')"
  exit 2
fi
if ! pyver=$("$py" -c 'import sys; assert sys.version_info >= (3, 10); print("%d.%d" % sys.version_info[:2])'); then
  echo "::error title=gpu-runner::'$py' is older than Python 3.10 (input 'python')"
  exit 2
fi
hash=$(sha256sum "$GITHUB_ACTION_PATH/pyproject.toml" | cut -c1-16)
base="${RUNNER_TEMP:-/tmp}/gpu-runner"
# What each mode uses beyond running and reporting notebooks (pyproject.toml's extras). The run
# job on a GPU VM installs no cloud client and no browser driver.
case "${GPU_RUNNER_MODE:-}" in
  start | stop | janitor | doctor) extras="gce,github" ;;
  comment | baseline | history) extras="github" ;;
  report) extras="pdf,github" ;;
  *) extras="" ;;
esac
# Only the jobs of the code under test (run, check: no secret, no token that may write) restore a
# cache. Any job may write the cache (the run job's own steps, the notebook among them, hold its
# ACTIONS_RUNTIME_TOKEN), so a mode that holds a secret or decides what runs (plan, start, stop,
# janitor, revoke-approval, baseline, history, report, comment) executes nothing restored from one: the
# cache step is skipped, and the install uses fresh folders and fetches uv anew.
case "${GPU_RUNNER_MODE:-}" in
  run | check) cache=true ;;
  *) cache=false ;;
esac
{
  echo "cache=$cache"
  echo "key=gpu-runner-pip-${RUNNER_OS:-Linux}-${RUNNER_ARCH:-X64}-py$pyver-$hash-${extras:-core}"
  echo "stamp=py$pyver-$hash"
  echo "extras=$extras"
  echo "venv=$base/venv-py$pyver-$hash"
  echo "pip-cache=$base/pip-cache"
} >>"$GITHUB_OUTPUT"
