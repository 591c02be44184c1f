#!/bin/bash
# The hand-over figures of docs/performance.md: one daemon holding N clients of a live match
# (default 15,000: this host caps a process at 20,000 open files, and the simulator holds the
# clients in one process) is replaced by a successor on SIGUSR2; every client must then get the
# rest of the match exactly once. Run it from the repository root after `make build`, inside a
# network namespace so this host's settings stay as they are:
#   ip netns add msho && ip netns exec msho docs/handover-scale.sh; ip netns del msho
set -eu
N=${N:-15000}
ip link set lo up
sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 net.ipv4.ip_local_port_range="10240 65535"
dir=$(mktemp -d /tmp/matchstream-handover.XXXXXX)
trap 'kill $(cat $dir/pids 2>/dev/null) 2>/dev/null || true; rm -rf "$dir"' EXIT
api=http://127.0.0.1:8888
subs() { curl -s $api/matches | grep -o '"subscribers":[0-9]*' | head -1 | cut -d: -f2; }

bin/matchstream serve --config /dev/null --state-dir "$dir/state" --api 127.0.0.1:8888 --stream 127.0.0.1:9000-9007 \
  --log-level info > "$dir/log" 2>&1 &
old=$!
echo $old > "$dir/pids"
until [ -s "$dir/state/watcher.token" ] && curl -sf $api/healthz >/dev/null; do sleep 0.1; done
head -1 testdata/matches/elp-tig-2011-09-10.jsonl > "$dir/start.jsonl"
sed -n 2,15p testdata/matches/elp-tig-2011-09-10.jsonl > "$dir/part1.jsonl"
sed -n '16,$p' testdata/matches/elp-tig-2011-09-10.jsonl > "$dir/part2.jsonl"
w() { bin/matchstream watcher --api $api --token-file "$dir/state/watcher.token" --speed 0 -q --match elp-tig-2011-09-10 "$@"; }
w "$dir/start.jsonl"
bin/matchstream client --api $api --match elp-tig-2011-09-10 -n "$N" -c 500 --protocol 3 --timeout 600s > "$dir/client" 2>&1 &
client=$!
until [ "$(subs)" = "$N" ]; do sleep 0.2; done
w "$dir/part1.jsonl"
rss_old=$(grep VmRSS /proc/$old/status | awk '{print $2}')
t0=$(date +%s.%N)
kill -USR2 $old
while kill -0 $old 2>/dev/null; do sleep 0.01; done
t1=$(date +%s.%N)
new=$(curl -s $api/healthz | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
echo "$new" >> "$dir/pids"
w "$dir/part2.jsonl"
wait $client || true
rss_new=$(grep VmRSS /proc/$new/status | awk '{print $2}')
echo "clients: $N, old pid $old (RSS $((rss_old/1024)) MB), successor $new (RSS $((rss_new/1024)) MB after the match)"
echo "SIGUSR2 to the old process gone: $(echo "$t1 - $t0" | bc) s"
grep -E "hand-over|taken over" "$dir/log" | sed 's/^/log: /'
cat "$dir/client"
