#!/usr/bin/env bash
# gpu-runner action: install the package from the action's own checkout into a private virtual
# environment (the caller's Python and packages stay as they are), with only the extras this mode
# needs (GPU_RUNNER_EXTRAS: run and check on a GPU VM need none). A job that uses the action more
# than once installs it once: the venv is reused while its stamp matches and holds those extras.
#
# The installer is uv (GPU_RUNNER_INSTALLER=uv, the default: several times faster than pip on a
# machine billed by the second), itself installed by pip; pip when uv cannot be had, or when
# GPU_RUNNER_INSTALLER=pip. uv gets pip's index settings from PIP_INDEX_URL, PIP_EXTRA_INDEX_URL
# and PIP_FIND_LINKS (pip.conf files are pip's alone). Both caches live under PIP_CACHE_DIR, and uv
# there too, only where GPU_RUNNER_CACHE_TRUSTED=true (run, check: see action-key.sh); every other
# mode installs with fresh, empty folders.
set -euo pipefail

venv="$GPU_RUNNER_VENV"
stamp="$venv/.gpu-runner-stamp"
want="${GPU_RUNNER_EXTRAS:-}"
have=""
ours=false
if [ -x "$venv/bin/gpu-runner" ] && [ "$(sed -n 1p "$stamp" 2>/dev/null)" = "$GPU_RUNNER_STAMP" ]; then
  ours=true
  have=$(sed -n 2p "$stamp")
  missing=""
  for extra in ${want//,/ }; do
    case ",$have," in
      *",$extra,"*) ;;
      *) missing="$missing $extra" ;;
    esac
  done
  if [ -z "$missing" ]; then
    echo "gpu-runner: using the virtual environment installed earlier in this job ($venv)"
    "$venv/bin/gpu-runner" --version
    echo "bin=$venv/bin/gpu-runner" >>"$GITHUB_OUTPUT"
    exit 0
  fi
fi
all=$(printf '%s\n' "$have" "$want" | tr , '\n' | sed '/^$/d' | sort -u | paste -sd, -)
spec="$GITHUB_ACTION_PATH"
if [ -n "$all" ]; then
  spec="${GITHUB_ACTION_PATH}[$all]"
fi
echo "::group::Install gpu-runner${all:+ [$all]} into $venv"
if ! $ours; then
  rm -rf "$venv"
  "${GPU_RUNNER_VENV_PYTHON:-python3}" -m venv --without-pip "$venv"
fi
py="$venv/bin/python"
venv_pip() {  # pip inside the venv, put there on first need
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    "$py" -m ensurepip --upgrade --default-pip >/dev/null
  fi
  "$py" -m pip --disable-pip-version-check "$@"
}
fetch_uv() {  # uv into a folder of its own, with the job's pip if it has one, else the venv's
  "${GPU_RUNNER_VENV_PYTHON:-python3}" -m pip --disable-pip-version-check install --quiet --no-compile \
    --target "$tools" uv 2>/dev/null || venv_pip install --quiet --no-compile --target "$tools" uv
}
if [ "${GPU_RUNNER_CACHE_TRUSTED:-false}" = true ]; then
  # run, check: uv itself lives in the cached folder when there is one: a warm cache needs no pip at all
  tools="${PIP_CACHE_DIR:-$(dirname "$venv")}/uv-tool"
else
  # a mode that holds a secret: nothing that was there before this step (a cache, another job's
  # files) is executed or installed from; pip and uv get empty folders of their own, uv is fetched now
  fresh=$(mktemp -d "${RUNNER_TEMP:-/tmp}/gpu-runner-fresh.XXXXXX")
  export PIP_CACHE_DIR="$fresh/pip-cache" UV_CACHE_DIR="$fresh/uv-cache"
  tools="$fresh/uv-tool"
fi
installed=false
if [ "${GPU_RUNNER_INSTALLER:-uv}" = uv ]; then
  if [ -x "$tools/bin/uv" ] || fetch_uv; then
    export UV_CACHE_DIR="${UV_CACHE_DIR:-${PIP_CACHE_DIR:+$PIP_CACHE_DIR/uv}}"
    export UV_INDEX_URL="${UV_INDEX_URL:-${PIP_INDEX_URL:-}}" UV_EXTRA_INDEX_URL="${UV_EXTRA_INDEX_URL:-${PIP_EXTRA_INDEX_URL:-}}"
    export UV_FIND_LINKS="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-}}"
    for v in UV_CACHE_DIR UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS; do
      if [ -z "${!v}" ]; then unset "$v"; fi
    done
    if "$tools/bin/uv" pip install --python "$py" "$spec"; then
      installed=true
    else
      echo "::warning title=gpu-runner::uv could not install gpu-runner; installing with pip instead"
    fi
  else
    echo "gpu-runner: uv is not available here; installing with pip"
  fi
fi
if ! $installed; then
  # no bytecode at install time: only what is imported gets compiled, on first use
  venv_pip install --progress-bar off --no-compile "$spec"
fi
printf '%s\n%s\n' "$GPU_RUNNER_STAMP" "$all" >"$stamp"
echo "::endgroup::"
"$venv/bin/gpu-runner" --version
echo "bin=$venv/bin/gpu-runner" >>"$GITHUB_OUTPUT"
