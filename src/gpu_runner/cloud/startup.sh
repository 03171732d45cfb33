#!/bin/bash
# gpu-runner: the startup script of an ephemeral GPU runner VM (rendered by `gpu-runner start`).
#
# 1. reads the runner's just-in-time config from instance metadata, then removes it from the
#    metadata (only when the VM has a service account that may call setMetadata);
# 2. closes the metadata server's HTTP endpoint to the job: its containers, and every user but root
#    on the VM (the VM's service-account token, if it has one, is served there). The same address
#    is the VM's DNS resolver and NTP server: those stay open to everyone. A container job on a
#    VM with a service account is refused (Docker is root on the VM: no firewall holds it);
# 3. checks the GPUs (nvidia-smi lists the expected count), retrying while the driver installs;
# 4. uses the runner on the image when it is at least RUNNER_VERSION (the current release, or the
#    pin), else installs RUNNER_VERSION (checksum verified): GitHub gives jobs only to a current runner;
# 5. runs one job with `run.sh --jitconfig` as the unprivileged user gpu-runner (root only where
#    the image cannot make that user). The runner's folder stays root's: that user may write only
#    _diag/, _work/ and the files the runner rewrites (run-helper.sh, and the JIT config's .runner,
#    .credentials, .credentials_rsaparams, mode 0600), never its binaries, scripts or .env. A runner
#    that ends before its job, refused a write there (its log or output says so), is given its
#    folder as it used to be (`runner-folder-fallback`) and started once more with the same, still
#    unused, JIT config. Then the VM stays up, idle, until the entry's stop job
#    deletes it (seconds later), or at the latest Compute Engine at its maxRunDuration. It never
#    powers itself off: a stopped VM's termination time is cleared, so nothing but a janitor would
#    ever delete it. With self_delete (a service account that may delete it) it deletes itself.
# 6. with a debug hold (HOLD_S > 0): after the job, waits up to HOLD_GRACE_S for the entry's stop
#    job to mark the VM held (metadata gpu-runner-hold=<epoch>, set only when the entry failed);
#    if it does, the VM stays up for a look until then, never more than HOLD_S after its job, and
#    then says so and waits as in 5: the janitor deletes it once its hold has ended, its
#    maxRunDuration (which covers the hold) at the latest.
# 7. a runner that has not been given a job within IDLE_TIMEOUT_S (its run job was skipped or
#    cancelled) is stopped (so it can never take a job later), and the VM waits as in 5.
#
# Progress goes to the serial console as `gpu-runner-status: STATE DETAIL` lines (and to the
# guest attribute gpu-runner/status); `gpu-runner start` polls them to fail fast.
# The GPU_RUNNER_* variables below exist for tests; on a VM they are unset.
set -uo pipefail

EXPECTED_GPUS=@@EXPECTED_GPUS@@
RUNNER_VERSION=@@RUNNER_VERSION@@
RUNNER_SHA256=@@RUNNER_SHA256@@
RUNNER_MIN_VERSION=@@RUNNER_MIN_VERSION@@
HEALTH_TRIES=@@HEALTH_TRIES@@
HEALTH_WAIT_S=@@HEALTH_WAIT_S@@
SELF_DELETE=@@SELF_DELETE@@
RUNNER_DOCKER=@@RUNNER_DOCKER@@
HOLD_S=@@HOLD_S@@
HOLD_GRACE_S=@@HOLD_GRACE_S@@
HOLD_POLL_S=@@HOLD_POLL_S@@
IDLE_TIMEOUT_S=@@IDLE_TIMEOUT_S@@
IDLE_POLL_S=@@IDLE_POLL_S@@
JIT_KEY=gpu-runner-jitconfig
HOLD_KEY=gpu-runner-hold
HIJACK_STATE=hijack
RUNNER_USER=gpu-runner
METADATA_V4=169.254.169.254
METADATA_V6=fd20:ce::254
METADATA_CHAIN=GPU-RUNNER-METADATA

MD="${GPU_RUNNER_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
API="${GPU_RUNNER_COMPUTE_API:-https://compute.googleapis.com/compute/v1}"
RUNNER_DIR="${GPU_RUNNER_RUNNER_DIR:-/opt/actions-runner}"
RUNNER_URL_BASE="${GPU_RUNNER_RUNNER_URL_BASE:-https://github.com/actions/runner/releases/download}"
IF_INET6="${GPU_RUNNER_IF_INET6:-/proc/net/if_inet6}"
HOOK_DIR="${GPU_RUNNER_HOOK_DIR:-/etc/gpu-runner}"
HOOK_POLL_S="${GPU_RUNNER_HOOK_POLL_S:-0.5}"
HEALTH_DETAIL=""
RUNNER_OUT=$(mktemp) # the runner's output, for its permission failures (root's alone)
RUNNER_MARKER=""
RUNNER_TOOK_JOB=0

md() {
  curl -sSf --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' "$MD/$1"
}

status() {  # STATE DETAIL...
  local state=$1
  shift
  echo "gpu-runner-status: $state $*"
  curl -sS -o /dev/null -X PUT -H 'Metadata-Flavor: Google' --data "$state $*" \
    "$MD/instance/guest-attributes/gpu-runner/status" 2>/dev/null || true
}

access_token() {
  md 'instance/service-accounts/default/token' | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p'
}

has_identity() {  # whether the VM has a service account (and so a token on the metadata server)
  md instance/service-accounts/default/email >/dev/null 2>&1
}

finish() {  # WHY: deletes this VM (self_delete), else leaves it up, idle, for the entry's stop job
  local tok
  if [ "$SELF_DELETE" -eq 1 ]; then
    status deleting "$1"
    if tok=$(access_token) && [ -n "$tok" ] &&
      curl -sSf -o /dev/null -X DELETE -H "Authorization: Bearer $tok" "$SELF"; then
      return 0
    fi
    echo "gpu-runner: this VM may not delete itself"
  fi
  # Never `poweroff`: Compute Engine clears a stopped VM's termination time, so a powered-off VM
  # would outlive its maxRunDuration (its disk billed) until someone deleted it.
  status awaiting-delete "$1; idle until its stop job deletes it (its maxRunDuration at the latest)"
}

metadata_rules() {  # TOOL ADDRESS: close the metadata server at ADDRESS but for its DNS and NTP
  local t=$1 addr=$2
  # one chain of ours: DNS (udp and tcp 53) and NTP (udp 123) pass, anything else is refused
  # (the HTTP endpoint, whichever port), for the sources the three rules below send into it
  "$t" -w -N "$METADATA_CHAIN" >/dev/null 2>&1 || "$t" -w -F "$METADATA_CHAIN" || return 1
  "$t" -w -A "$METADATA_CHAIN" -p udp --dport 53 -j RETURN &&
    "$t" -w -A "$METADATA_CHAIN" -p tcp --dport 53 -j RETURN &&
    "$t" -w -A "$METADATA_CHAIN" -p udp --dport 123 -j RETURN &&
    "$t" -w -A "$METADATA_CHAIN" -j REJECT || return 1
  "$t" -w -N DOCKER-USER >/dev/null 2>&1 || true # Docker's chain for rules of our own; kept as is
  "$t" -w -I DOCKER-USER -d "$addr" -j "$METADATA_CHAIN" &&
    "$t" -w -I FORWARD -d "$addr" -j "$METADATA_CHAIN" &&
    "$t" -w -I OUTPUT -d "$addr" -m owner ! --uid-owner 0 -j "$METADATA_CHAIN"
}

guard_metadata() {  # the job's containers and every user but root lose the metadata server (IPv4 and IPv6)
  command -v iptables >/dev/null 2>&1 && metadata_rules iptables "$METADATA_V4/32" || return 1
  [ -e "$IF_INET6" ] || return 0 # a kernel without IPv6 reaches no IPv6 address
  command -v ip6tables >/dev/null 2>&1 && metadata_rules ip6tables "$METADATA_V6/128"
}

runner_user() {  # the unprivileged user the runner runs as, where the image allows one
  command -v runuser >/dev/null 2>&1 || return 1
  if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$RUNNER_USER" || return 1
  fi
  if [ "$RUNNER_DOCKER" -eq 1 ]; then # a container job: the runner drives Docker
    getent group docker >/dev/null 2>&1 && usermod -aG docker "$RUNNER_USER" || return 1
  fi
  if ! lock_runner_folder; then
    echo "gpu-runner: could not keep the runner's folder root's; it goes to $RUNNER_USER"
    chown -R "$RUNNER_USER:" "$RUNNER_DIR"
  fi
}

# What the runner (actions/runner) writes in its own folder, as the user it runs as:
# - run.sh copies run-helper.sh.template to run-helper.sh on every start (`cp -f`: it rewrites the
#   file in place when it exists; src/Misc/layoutroot/run.sh);
# - `Runner.Listener run --jitconfig` writes each entry of the JIT config (.runner, .credentials,
#   .credentials_rsaparams) with File.WriteAllBytes into its root folder (src/Runner.Listener/Runner.cs);
#   a failure there is traced to _diag/Runner_*.log, printed, and ends the listener before any job;
# - it logs to _diag/ and works in _work/ (src/Runner.Common/HostContext.cs);
# - an ephemeral runner deletes .runner and .credentials after its job (DeleteLocalRunnerConfig,
#   src/Runner.Listener/Configuration/ConfigurationManager.cs): that fails here, after the job,
#   which is done by then (the files are spent: this VM serves one job);
# - a self-update unpacks bin.<version>/ and externals.<version>/ into it
#   (src/Runner.Listener/SelfUpdater.cs): this VM installs a current runner, so none is due.
RUNNER_OWN_FILES=(run-helper.sh .runner .credentials .credentials_rsaparams)
RUNNER_OWN_DIRS=(_diag _work)

lock_runner_folder() {  # root owns the runner's folder; its user may write only what the runner writes
  local f
  chown -R 0:0 "$RUNNER_DIR" && chmod -R go-w,a+rX "$RUNNER_DIR" || return 1
  for f in "${RUNNER_OWN_DIRS[@]}"; do
    [ ! -L "$RUNNER_DIR/$f" ] || rm -f "$RUNNER_DIR/$f" || return 1
    mkdir -p "$RUNNER_DIR/$f" || return 1
  done
  for f in "${RUNNER_OWN_FILES[@]}"; do
    rm -f "${RUNNER_DIR:?}/$f" || return 1
    if [ "$f" = run-helper.sh ]; then
      [ -f "$RUNNER_DIR/run-helper.sh.template" ] || continue
      cp "$RUNNER_DIR/run-helper.sh.template" "$RUNNER_DIR/$f" && chmod 0755 "$RUNNER_DIR/$f" || return 1
    else # a secret of the runner's: its user's alone
      (umask 077 && : >"$RUNNER_DIR/$f") && chmod 0600 "$RUNNER_DIR/$f" || return 1
    fi
  done
  chown -R "$RUNNER_USER:" "${RUNNER_OWN_DIRS[@]/#/$RUNNER_DIR/}" || return 1
  for f in "${RUNNER_OWN_FILES[@]}"; do
    [ ! -e "$RUNNER_DIR/$f" ] || chown "$RUNNER_USER:" "$RUNNER_DIR/$f" || return 1
  done
}

folder_denied() {  # MARKER: what the runner said (since MARKER) of a write it was refused, if anything
  local line
  line=$({
    find "$RUNNER_DIR/_diag" -maxdepth 1 -type f -name 'Runner_*.log' -newer "$1" -exec cat {} + 2>/dev/null
    cat "$RUNNER_OUT"
  } | grep -a -E 'UnauthorizedAccessException|Access to the path|Permission denied' | head -n 1 | head -c 200 |
    tr -cd '[:print:]') # (not its status: under pipefail, a reader that ends early fails the writers)
  [ -n "$line" ] && printf '%s\n' "$line"
}

forget_jitconfig() {  # drop the runner config from the instance metadata; needs compute.instances.setMetadata
  command -v python3 >/dev/null 2>&1 || return 1
  local tok body
  tok=$(access_token) || return 1
  body=$(curl -sSf -H "Authorization: Bearer $tok" "$SELF" | python3 -c '
import json, sys
md = json.load(sys.stdin).get("metadata", {})
items = [i for i in md.get("items", []) if i.get("key") != sys.argv[1]]
print(json.dumps({"kind": "compute#metadata", "fingerprint": md.get("fingerprint", ""), "items": items}))
' "$JIT_KEY") || return 1
  curl -sSf -o /dev/null -X POST -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
    --data "$body" "$SELF/setMetadata"
}

gpu_health() {
  local i n out
  if [ "$EXPECTED_GPUS" -eq 0 ]; then
    status health-ok "no GPU expected"
    return 0
  fi
  for ((i = 1; i <= HEALTH_TRIES; i++)); do
    if out=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1); then
      n=$(printf '%s\n' "$out" | grep -c .)
      if [ "$n" -eq "$EXPECTED_GPUS" ]; then
        status health-ok "$n GPU(s): $(printf '%s\n' "$out" | sort | uniq -c | tr -s ' \n' ' ')"
        return 0
      fi
      HEALTH_DETAIL="nvidia-smi lists $n GPU(s), expected $EXPECTED_GPUS"
    else
      HEALTH_DETAIL="nvidia-smi failed: $(printf '%s\n' "$out" | tail -n 1)"
    fi
    echo "gpu-runner: GPU check $i/$HEALTH_TRIES: $HEALTH_DETAIL"
    if [ "$i" -lt "$HEALTH_TRIES" ]; then
      sleep "$HEALTH_WAIT_S"
    fi
  done
  return 1
}

runner_version_in() {  # DIR: the version of the runner installed there ('' when it cannot tell)
  "$1/bin/Runner.Listener" --version 2>/dev/null | tr -d '\r' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+$' | head -n 1
}

version_at_least() {  # A B: whether version A >= version B
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]
}

install_runner() {  # the runner on the image when it is recent enough, else RUNNER_VERSION (checksum verified)
  local tgz=/tmp/actions-runner-$RUNNER_VERSION.tar.gz have want=${RUNNER_VERSION:-$RUNNER_MIN_VERSION}
  if [ -x "$RUNNER_DIR/run.sh" ]; then
    have=$(runner_version_in "$RUNNER_DIR")
    if [ -n "$have" ] && version_at_least "$have" "$want" && version_at_least "$have" "$RUNNER_MIN_VERSION"; then
      echo "gpu-runner: using the runner $have in $RUNNER_DIR"
      return 0
    fi
    echo "gpu-runner: the runner in $RUNNER_DIR is ${have:-of unknown version}, older than $want" \
      "(GitHub gives jobs only to a current runner): installing $want instead"
    rm -rf "$RUNNER_DIR"
  fi
  if [ -z "$RUNNER_VERSION" ]; then
    echo "gpu-runner: no runner release to install"
    return 1
  fi
  echo "gpu-runner: installing runner $RUNNER_VERSION into $RUNNER_DIR"
  curl -sSfL --retry 5 -o "$tgz" \
    "$RUNNER_URL_BASE/v$RUNNER_VERSION/actions-runner-linux-x64-$RUNNER_VERSION.tar.gz" || return 1
  echo "$RUNNER_SHA256  $tgz" | sha256sum -c - || return 1
  mkdir -p "$RUNNER_DIR" && tar -xzf "$tgz" -C "$RUNNER_DIR" && rm -f "$tgz"
}

hold_for_a_look() {  # after the job: wait for stop's word; held, stay up until the hold ends
  local now job_end grace_end hold_end cap
  job_end=$(date +%s)
  grace_end=$((job_end + HOLD_GRACE_S))
  cap=$((job_end + HOLD_S))
  hold_end=""
  status awaiting-hold "the job ended; kept only if stop holds this VM for a look (waiting ${HOLD_GRACE_S}s)"
  while now=$(date +%s) && [ "$now" -lt "$grace_end" ]; do
    if hold_end=$(md "instance/attributes/$HOLD_KEY" 2>/dev/null) && [ -n "$hold_end" ]; then
      break
    fi
    hold_end=""
    sleep "$HOLD_POLL_S"
  done
  case "$hold_end" in '' | *[!0-9]*) return 0 ;; esac
  [ "$hold_end" -gt "$cap" ] && hold_end=$cap
  status held "for a look until $(date -u -d "@$hold_end" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null || echo "$hold_end")"
  while now=$(date +%s) && [ "$now" -lt "$hold_end" ]; do
    sleep "$HOLD_POLL_S"
  done
  status hold-ended "the hold for a look ended"
}

job_started() {  # MARKER: the runner has started a worker (its log is newer than MARKER) for its job
  [ -n "$(find "$RUNNER_DIR/_diag" -maxdepth 1 -name 'Worker_*.log' -newer "$1" 2>/dev/null | head -n 1)" ] ||
    pgrep -x Runner.Worker >/dev/null 2>&1
}

run_one_job() {  # JIT [COMMAND PREFIX...]: the runner until its one job ends; 124 when none came in time
  # Sets RUNNER_TOOK_JOB (1 once the runner started a worker) and RUNNER_MARKER (a file older
  # than anything this runner wrote); its output goes to the serial console and to RUNNER_OUT.
  local jit=$1 pid started=$SECONDS tee_fd tee_pid rc
  shift
  RUNNER_TOOK_JOB=0
  RUNNER_MARKER=$(mktemp)
  : >"$RUNNER_OUT"
  exec {tee_fd}> >(tee -a "$RUNNER_OUT")
  tee_pid=$!
  "$@" "$RUNNER_DIR/run.sh" --jitconfig "$jit" >&"$tee_fd" 2>&1 &
  pid=$!
  exec {tee_fd}>&-
  while kill -0 "$pid" 2>/dev/null; do
    if job_started "$RUNNER_MARKER"; then
      RUNNER_TOOK_JOB=1
      echo "gpu-runner: the runner has its job"
      wait "$pid"
      return $?
    fi
    if [ $((SECONDS - started)) -ge "$IDLE_TIMEOUT_S" ]; then
      status idle-timeout "no job within ${IDLE_TIMEOUT_S}s: its run job was skipped or cancelled"
      kill -TERM "$pid" 2>/dev/null
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
      done
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 124
    fi
    sleep "$IDLE_POLL_S"
  done
  wait "$pid"
  rc=$?
  if [ "$RUNNER_TOOK_JOB" -eq 0 ] && job_started "$RUNNER_MARKER"; then
    RUNNER_TOOK_JOB=1
    echo "gpu-runner: the runner had its job"
  fi
  for _ in 1 2 3 4 5 6 7 8 9 10; do # its last words in RUNNER_OUT (a job's stray process may hold them)
    kill -0 "$tee_pid" 2>/dev/null || break
    sleep 0.2
  done
  return "$rc"
}

install_job_hook() {  # the runner's job-started hook: the runner serves only the job start made it for
  # A repository runner serves any workflow run of the repository that asks for its label, a fork's
  # pull_request run included. The runner runs the script ACTIONS_RUNNER_HOOK_JOB_STARTED names
  # (bash -e) before each job, with the job's default variables; a script that fails fails the job
  # before any step runs. This one holds GITHUB_REPOSITORY, GITHUB_REPOSITORY_ID, GITHUB_RUN_ID,
  # GITHUB_RUN_ATTEMPT and GITHUB_WORKFLOW_REF to what start recorded in the instance metadata
  # (gpu-runner-job-*), read here as root (the job cannot reach the metadata server). It lives
  # outside the runner's folder, owned by root: the job's user cannot change it. A refused job
  # leaves a mark; a watcher (root) then says `hijack` and ends the VM.
  local key val mark alive parent=$$
  mkdir -p "$HOOK_DIR" "$HOOK_DIR/marks" || return 1
  chmod 0755 "$HOOK_DIR" && chmod 1733 "$HOOK_DIR/marks" || return 1
  {
    for key in repository repository-id run-id run-attempt workflow-ref; do
      val=$(md "instance/attributes/gpu-runner-job-$key" 2>/dev/null) || val=""
      printf '%s=%s\n' "$key" "${val//$'\n'/ }"
    done
  } >"$HOOK_DIR/expected-job" || return 1
  cat >"$HOOK_DIR/job-started.sh" <<'HOOK' || return 1
#!/bin/bash
# gpu-runner: job-started hook (written by the VM's startup script; owned by root).
set -u
here=$(dirname "${BASH_SOURCE[0]}")
expected="$here/expected-job"
want() { sed -n "s/^$1=//p" "$expected" 2>/dev/null | head -n 1; }
wrong=""
check() { # KEY VALUE: the job's VALUE must be the one recorded (repository always; the rest when recorded)
  local w
  w=$(want "$1")
  if [ "$1" = repository ] || [ -n "$w" ]; then
    if [ -z "$w" ] || [ "$2" != "$w" ]; then wrong="$wrong $1"; fi
  fi
}
check repository "${GITHUB_REPOSITORY:-}"
check repository-id "${GITHUB_REPOSITORY_ID:-}"
check run-id "${GITHUB_RUN_ID:-}"
check run-attempt "${GITHUB_RUN_ATTEMPT:-}"
check workflow-ref "${GITHUB_WORKFLOW_REF:-}"
if [ -n "$wrong" ]; then
  echo "gpu-runner: hijack: this runner was made for another job (differs:$wrong); this job does not run here"
  printf '%s\n' "run ${GITHUB_RUN_ID:-?} attempt ${GITHUB_RUN_ATTEMPT:-?} differs:$wrong" \
    >"$here/marks/hijack.$$" 2>/dev/null || true
  exit 1
fi
echo "gpu-runner: this runner was made for this job (run ${GITHUB_RUN_ID:-local}, attempt ${GITHUB_RUN_ATTEMPT:-1})"
HOOK
  chmod 0755 "$HOOK_DIR/job-started.sh" && chmod 0644 "$HOOK_DIR/expected-job" || return 1
  [ -p "$HOOK_DIR/.tick" ] || mkfifo -m 0600 "$HOOK_DIR/.tick" 2>/dev/null || true
  export ACTIONS_RUNNER_HOOK_JOB_STARTED="$HOOK_DIR/job-started.sh"
  if [ -d "$RUNNER_DIR" ]; then # the runner also reads its environment from the .env file in its folder
    printf 'ACTIONS_RUNNER_HOOK_JOB_STARTED=%s\n' "$ACTIONS_RUNNER_HOOK_JOB_STARTED" >>"$RUNNER_DIR/.env" || return 1
  fi
  ( # the watcher (root): a refused job means a hijacked runner; say so and end the VM. It looks
    # once more after main has ended (the runner exits right after the refused job), then goes too.
    alive=1
    while [ "$alive" -eq 1 ]; do
      if ! kill -0 "$parent" 2>/dev/null || [ "$(sed 's/.*) //' "/proc/$parent/stat" 2>/dev/null | cut -c1)" = Z ]; then
        alive=0 # gone, or ended and not yet reaped
      fi
      mark=$(find "$HOOK_DIR/marks" -maxdepth 1 -name 'hijack.*' -type f 2>/dev/null | head -n 1)
      if [ -n "$mark" ]; then
        status "$HIJACK_STATE" "a job of another run took this runner ($(head -c 200 "$mark" | tr -cd '[:print:]')); it was refused"
        finish "hijack"
        exit 0
      fi
      if [ "$alive" -eq 0 ]; then
        break
      elif [ -p "$HOOK_DIR/.tick" ]; then # a pause with no process of its own: nothing ever writes the pipe
        read -r -t "$HOOK_POLL_S" _ <>"$HOOK_DIR/.tick" || true
      else
        sleep "$HOOK_POLL_S"
      fi
    done
  ) &
}

main() {
  local jit rc denied
  PROJECT=$(md project/project-id) || { echo "gpu-runner: no metadata server"; exit 1; }
  ZONE=$(md instance/zone)
  ZONE=${ZONE##*/}
  NAME=$(md instance/name)
  SELF="$API/projects/$PROJECT/zones/$ZONE/instances/$NAME"
  status booting "$NAME"

  if ! jit=$(md "instance/attributes/$JIT_KEY"); then
    finish "no runner config in the metadata (used already: this VM has run its job)"
    return 1
  fi
  if ! has_identity; then
    echo "gpu-runner: no service account on this VM: the runner config stays in the metadata until stop deletes the VM"
  elif forget_jitconfig; then
    echo "gpu-runner: runner config removed from the instance metadata"
  else
    echo "gpu-runner: runner config stays in the instance metadata until this VM is deleted"
  fi

  if [ "$RUNNER_DOCKER" -eq 1 ] && has_identity; then
    status firewall-failed "a container job drives Docker, which is root on this VM, so no firewall keeps it from the service account's token: refused (give this machine no service account)"
    finish "container job on a VM with a service account"
    return 1
  fi
  if guard_metadata; then
    echo "gpu-runner: the metadata server is closed to the job (containers and users other than root; DNS and NTP stay open)"
  elif has_identity; then
    status firewall-failed "could not close the metadata server (and its service-account token) to the job (iptables, or ip6tables where the kernel has IPv6)"
    finish "firewall failed"
    return 1
  else
    echo "gpu-runner: warning: could not close the metadata server to the job (no service account: no token there)"
  fi

  if ! gpu_health; then
    status health-failed "$HEALTH_DETAIL"
    finish "GPU health check failed"
    return 1
  fi
  if ! install_runner; then
    status install-failed "could not install runner $RUNNER_VERSION (download or checksum)"
    finish "runner install failed"
    return 1
  fi

  if ! install_job_hook; then
    status hook-failed "could not install the job-started hook that keeps other runs' jobs off this runner"
    finish "hook failed"
    return 1
  fi
  if runner_user; then
    status runner-starting "runner $NAME as user $RUNNER_USER"
    run_one_job "$jit" runuser -u "$RUNNER_USER" --
    rc=$?
    if [ "$rc" -ne 124 ] && [ "$RUNNER_TOOK_JOB" -eq 0 ] && denied=$(folder_denied "$RUNNER_MARKER"); then
      # The runner needed to write somewhere in its root-owned folder that it is not given; its
      # registration is still unused (no job came): hand it its folder, as before, and start it again.
      status runner-folder-fallback "the runner was refused a write in its root-owned folder ($denied): its folder goes to $RUNNER_USER and it starts once more"
      chown -R "$RUNNER_USER:" "$RUNNER_DIR"
      run_one_job "$jit" runuser -u "$RUNNER_USER" --
      rc=$?
    fi
  else
    echo "gpu-runner: this image cannot run the runner as an unprivileged user; it runs as root"
    status runner-starting "runner $NAME as root"
    export RUNNER_ALLOW_RUNASROOT=1
    run_one_job "$jit"
    rc=$?
  fi
  jit=""
  if [ "$rc" -eq 124 ]; then
    finish "idle: no job within ${IDLE_TIMEOUT_S}s"
    return 0
  fi
  if [ "$rc" -eq 0 ]; then
    status job-done "runner exited"
  else
    status runner-failed "runner exited with $rc"
  fi
  if [ "$HOLD_S" -gt 0 ]; then
    hold_for_a_look
  fi
  finish "job done"
}

main "$@"
