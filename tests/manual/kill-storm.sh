#!/usr/bin/env bash
# Usage: ROUNDS=20 bash tests/manual/kill-storm.sh target/release/charm-host
# kill -9 storm: 3 agents with a leader-only service (1 s window). ROUNDS times: wait until
# the leader's service runs, SIGKILL the leader, wait for a successor, restart the killed
# agent. Then check that the service never ran on two units at once.
set -u
BIN=$(realpath "$1"); STATE=$(mktemp -d); OUT=$(mktemp -d); LOG=$OUT/service.log; : > $LOG
cd "$(dirname "$0")/../.."
start() { $BIN agent example-charms/singleton-service --unit db/$1 --state $STATE --guarantee-window 1s \
   --leader-service "singleton=while true; do echo db/$1 \$(date +%s%N) >> $LOG; sleep 0.01; done" >> $OUT/agent-$1.log 2>&1 & echo $! > $OUT/pid-$1; }
for u in 0 1 2; do start $u; done
leader() { for u in 0 1 2; do [ "$($BIN is-leader --unit db/$u --state $STATE --timeout 1s 2>/dev/null)" = True ] && { echo $u; return; }; done; }
last_tick() { tail -1 $LOG | cut -d' ' -f1; }
for i in $(seq 1 ${ROUNDS:-20}); do
  l=; for _ in $(seq 1 600); do l=$(leader); [ -n "$l" ] && [ "$(last_tick)" = "db/$l" ] && break; sleep 0.05; done
  kill -9 $(cat $OUT/pid-$l) 2>/dev/null; wait $(cat $OUT/pid-$l) 2>/dev/null
  for _ in $(seq 1 600); do n=$(leader); [ -n "$n" ] && [ "$n" != "$l" ] && break; sleep 0.05; done
  start $l
done
sleep 2
for u in 0 1 2; do kill -TERM $(cat $OUT/pid-$u); done; wait
python3 - "$LOG" <<'PY'
import sys
lines = sorted((int(t), u) for u, t in (l.split() for l in open(sys.argv[1])))
runs = []
for t, u in lines:
    if runs and runs[-1][0] == u: runs[-1][2] = t
    else: runs.append([u, t, t])
gaps = [(b[1] - a[2]) / 1e6 for a, b in zip(runs, runs[1:])]
print(f"{len(lines)} service ticks in {len(runs)} runs; gaps between runs (ms): min {min(gaps):.0f}, max {max(gaps):.0f}")
PY
