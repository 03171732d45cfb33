#!/usr/bin/env bash
# gpu-runner action: turn the action's inputs (INPUT_* variables, never expanded into the script
# text) into one `gpu-runner <mode>` command, run it, and pass its exit code on.
set -euo pipefail
set -f  # runtime and machine globs are gpu-runner's to expand, not the shell's

if [ -n "${GPU_RUNNER_GITHUB_TOKEN:-}" ]; then
  echo "::add-mask::$GPU_RUNNER_GITHUB_TOKEN"
fi

flag() {  # VALUE INPUT-NAME: succeeds for true, fails for false, exits 2 otherwise
  case "${1,,}" in
    true | 1 | yes) return 0 ;;
    false | 0 | no | "") return 1 ;;
    *)
      echo "::error title=gpu-runner::input '$2' must be true or false, got '$1'"
      exit 2
      ;;
  esac
}

fetched=""
fetch() {  # COMMIT: fetch it from origin with the job's token, which checkout did not keep
  # (persist-credentials: false): the header reaches git through the environment of this one
  # command (GIT_CONFIG_*: never on a command line, never written to .git/config), as checkout
  # sends it, scoped to the GitHub server. On failure, $fetched says why in one line.
  local err
  err=$(
    export GIT_TERMINAL_PROMPT=0
    if [ -n "${GPU_RUNNER_GITHUB_TOKEN:-}" ]; then
      basic=$(printf 'x-access-token:%s' "$GPU_RUNNER_GITHUB_TOKEN" | base64 | tr -d '\n')
      export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="http.${GITHUB_SERVER_URL:-https://github.com}/.extraheader"
      export GIT_CONFIG_VALUE_0="AUTHORIZATION: basic $basic"
    fi
    git fetch --no-tags --depth=1 origin "$1" 2>&1 >/dev/null
  ) && return 0
  fetched="git fetch of $1 failed: $(printf '%s\n' "$err" | grep -v '^\s*$' | tail -n 1)"
  return 1
}

project=()
if [ -n "${INPUT_GCP_PROJECT:-}" ]; then
  project=(--project "$INPUT_GCP_PROJECT")
fi
pdf=(--no-pdf)
if flag "${INPUT_PDF:-true}" pdf; then
  pdf=(--pdf)
fi
group=true
case "$INPUT_MODE" in
  plan)
    args=(plan --matrix "$INPUT_MATRIX" --format json)
    for r in ${INPUT_RUNTIME:-}; do args+=(--runtime "$r"); done
    for m in ${INPUT_MACHINE:-}; do args+=(--machine "$m"); done
    if flag "${INPUT_CHANGED_ONLY:-false}" changed-only; then
      if [ -n "${INPUT_CHANGED_FILES:-}" ]; then
        args+=(--changed-files "$INPUT_CHANGED_FILES")
      elif [ -n "${GPU_RUNNER_EVENT_BASE:-}" ] && [ "${GPU_RUNNER_EVENT_BASE//0/}" != "" ]; then
        changed="${RUNNER_TEMP:-/tmp}/gpu-runner/changed-files.txt"
        mkdir -p "$(dirname "$changed")"
        why=""
        fetch "$GPU_RUNNER_EVENT_BASE" || why=$fetched
        against=HEAD
        # a pull request whose code is not trusted here (pull_request_target, a fork's pull_request)
        # is planned from the base branch: its changes are those of its head commit, only listed
        if [ -n "${GPU_RUNNER_EVENT_HEAD:-}" ] && ! git merge-base --is-ancestor "$GPU_RUNNER_EVENT_HEAD" HEAD 2>/dev/null; then
          fetch "$GPU_RUNNER_EVENT_HEAD" || why=${why:-$fetched}
          against=$GPU_RUNNER_EVENT_HEAD
        fi
        if git diff --name-only "$GPU_RUNNER_EVENT_BASE" "$against" >"$changed" 2>/dev/null; then
          args+=(--changed-files "$changed")
        else
          echo "::warning title=gpu-runner::changed-only: cannot list the changed files against $GPU_RUNNER_EVENT_BASE${why:+ ($why)}; planning every runtime"
        fi
      else
        echo "gpu-runner: no base commit in this event: planning every runtime"
      fi
    fi
    if [ -n "${INPUT_FORK_GATE:-}" ]; then
      args+=(--fork-gate "$INPUT_FORK_GATE")
    fi
    ;;
  start) args=(start --matrix "$INPUT_MATRIX" --entry "$INPUT_ENTRY" --retry "${INPUT_RETRY:-0}" "${project[@]}") ;;
  stop)
    args=(stop --matrix "$INPUT_MATRIX" --entry "$INPUT_ENTRY" --retry "${INPUT_RETRY:-0}" "${project[@]}")
    if [ -n "${INPUT_RECORD:-}" ]; then
      args+=(--record "$INPUT_RECORD" --start-result "${INPUT_START_RESULT:-}" --run-result "${INPUT_RUN_RESULT:-}")
      args+=(--start-outputs "${INPUT_START_OUTPUTS:-}")
    fi
    ;;
  run | check)
    # the notebooks run here: they get no GitHub token
    unset GPU_RUNNER_GITHUB_TOKEN GITHUB_TOKEN
    # the runtime's Python (the job's python3, found before gpu-runner's private environment existed);
    # a matrix `python:` still wins over it
    if [ -n "${GPU_RUNNER_RUNTIME_PYTHON:-}" ]; then
      export GPU_RUNNER_PYTHON="$GPU_RUNNER_RUNTIME_PYTHON"
    fi
  ;;&
  check)
    args=(check --matrix "$INPUT_MATRIX" --entry "$INPUT_ENTRY" --out "$INPUT_RESULTS_DIR")
    group=false  # check folds each check's output itself
    ;;
  run)
    args=(run --matrix "$INPUT_MATRIX" --entry "$INPUT_ENTRY" --retry "${INPUT_RETRY:-0}" --out "$INPUT_RESULTS_DIR"
      "${pdf[@]}")
    if flag "${INPUT_RERUN:-false}" rerun; then args+=(--rerun); fi
    if ! flag "${INPUT_CHECKS:-true}" checks; then args+=(--no-checks); fi
    group=false  # run folds each notebook's log itself
    ;;
  baseline)
    args=(baseline fetch --out "${INPUT_BASELINE_DIR:-gpu-runner-baseline}" --optional)
    ;;
  history)
    # earlier runs' artifacts, downloaded into this job's temporary folder (never the caller's home),
    # checked as untrusted; no history is a notice, never a failure (see below)
    export GPU_RUNNER_CACHE_DIR="${RUNNER_TEMP:-/tmp}/gpu-runner/runs"
    args=(history --runs "${INPUT_HISTORY_RUNS:-20}" --out "${INPUT_HISTORY_DIR:-gpu-runner-history}" --optional)
    ;;
  report)
    # the results were written by the code under test: the report gets no GitHub token
    unset GPU_RUNNER_GITHUB_TOKEN GITHUB_TOKEN
    mkdir -p "$INPUT_RESULTS_DIR"  # no entry uploaded anything: every planned entry is reported as not run
    args=(report "$INPUT_RESULTS_DIR" --out "${INPUT_REPORT_DIR:-$INPUT_RESULTS_DIR}" "${pdf[@]}")
    if [ -n "${INPUT_BASELINE_DIR:-}" ]; then
      if [ -d "$INPUT_BASELINE_DIR" ]; then
        args+=(--baseline "$INPUT_BASELINE_DIR")
      else
        echo "gpu-runner: no baseline folder $INPUT_BASELINE_DIR (the baseline step did not run): no comparison"
      fi
    fi
    if [ -n "${INPUT_HISTORY_DIR:-}" ]; then
      if [ -f "$INPUT_HISTORY_DIR/history.json" ]; then
        args+=(--history "$INPUT_HISTORY_DIR/history.json")
      else
        echo "gpu-runner: no $INPUT_HISTORY_DIR/history.json (no history of earlier runs): no flaky or trend marks"
      fi
    fi
    if [ -n "${INPUT_PLAN:-}" ]; then
      plan="${RUNNER_TEMP:-/tmp}/gpu-runner/plan.json"
      mkdir -p "$(dirname "$plan")"
      printf '%s' "$INPUT_PLAN" >"$plan"
      args+=(--plan "$plan")
    fi
    group=false
    ;;
  comment) args=(comment "${INPUT_REPORT_DIR:-$INPUT_RESULTS_DIR}" --key "${INPUT_COMMENT_KEY:-default}" --optional) ;;
  revoke-approval)
    if [ -z "${INPUT_FORK_GATE:-}" ]; then
      echo "::error title=gpu-runner::mode revoke-approval needs the approval label in the input 'fork-gate'"
      exit 2
    fi
    args=(revoke-approval "$INPUT_FORK_GATE")
    ;;
  doctor)
    # read-only checks of the project and repository before any VM starts; what it cannot check
    # (a token that may not read a setting) is shown in the job summary and does not fail the job
    args=(doctor --matrix "$INPUT_MATRIX" --allow-unknown "${project[@]}")
    if [ -n "${INPUT_FORK_GATE:-}" ]; then args+=(--approval-label "$INPUT_FORK_GATE"); fi
    ;;
  janitor)
    args=(janitor --max-age "${INPUT_MAX_AGE:-3h}" "${project[@]}")
    if flag "${INPUT_DRY_RUN:-false}" dry-run; then args+=(--dry-run); fi
    ;;
  *)
    echo "::error title=gpu-runner::input 'mode' must be plan, doctor, start, run, check, stop, baseline, history, report, comment, revoke-approval or janitor; got '$INPUT_MODE'"
    exit 2
    ;;
esac

if $group; then echo "::group::gpu-runner ${args[*]}"; else echo "gpu-runner ${args[*]}"; fi
code=0
"$GPU_RUNNER_BIN" "${args[@]}" || code=$?
if $group; then echo "::endgroup::"; fi
echo "exit-code=$code" >>"$GITHUB_OUTPUT"
if [ "$INPUT_MODE" = history ] && [ "$code" != 0 ]; then
  # the history only adds marks to the report: whatever went wrong, the report job goes on
  echo "::notice title=gpu-runner history::no history (gpu-runner history exited $code): the report goes on without flaky or trend marks"
  exit 0
fi
exit "$code"
