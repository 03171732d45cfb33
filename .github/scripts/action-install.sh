#!/usr/bin/env bash
# gpu-runner action: install the package from the action's own checkout into a private virtual
# environment (the caller's Python and packages stay as they are). A job that uses the action more
# than once installs it once: the venv is reused while its stamp matches the cache key.
set -euo pipefail

venv="$GPU_RUNNER_VENV"
if [ -x "$venv/bin/gpu-runner" ] && [ "$(cat "$venv/.gpu-runner-stamp" 2>/dev/null)" = "$GPU_RUNNER_STAMP" ]; then
  echo "gpu-runner: using the virtual environment installed earlier in this job ($venv)"
else
  echo "::group::Install gpu-runner into $venv"
  "${GPU_RUNNER_VENV_PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$GITHUB_ACTION_PATH"
  echo "$GPU_RUNNER_STAMP" >"$venv/.gpu-runner-stamp"
  echo "::endgroup::"
fi
"$venv/bin/gpu-runner" --version
echo "bin=$venv/bin/gpu-runner" >>"$GITHUB_OUTPUT"
