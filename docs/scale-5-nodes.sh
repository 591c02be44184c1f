#!/bin/bash
# The scale-out run of docs/performance.md: one redis-server, five matchstream nodes, 90,000 clients.
# Run it from the repository root after `make build`, inside a network namespace so this host's
# settings stay as they are:
#   ip netns add msscale && ip netns exec msscale docs/scale-5-nodes.sh; ip netns del msscale
set -u
ip link set lo up
sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 net.ipv4.ip_local_port_range="10240 65535" net.ipv4.tcp_tw_reuse=1
rm -rf /tmp/scale && mkdir -p /tmp/scale
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir /tmp/scale --daemonize no > /tmp/scale/redis.log 2>&1 &
RPID=$!
sleep 0.5
PIDS=(); STREAMS=(); APIS=()
for i in 1 2 3 4 5; do
  s=$((9100 + 10*i)); a=$((8800 + i))
  bin/matchstream serve --config /dev/null --state-dir /tmp/scale/n$i --api 127.0.0.1:$a --stream 127.0.0.1:$s-$((s+3)) \
     --store redis://127.0.0.1:6390/0 --watcher-token tok --node-id n$i --log-level error &
  PIDS+=($!); STREAMS+=("127.0.0.1:$s-$((s+3))"); APIS+=("http://127.0.0.1:$a")
done
sleep 1
extra=""
for i in 1 2 3 4; do extra="$extra --node-api ${APIS[$i]} --node-pid ${PIDS[$i]}"; done
bin/matchstream bench --api ${APIS[0]} --token tok --daemon-pid ${PIDS[0]} --stream "$(IFS=,; echo "${STREAMS[*]}")" $extra \
   -n 90000 -c 2000 --per-process 18000 --events 5 --interval 500ms --timeout 60s --json > docs/bench-5-nodes-90000.json 2>/tmp/scale/bench.err
echo "bench rc=$?"
echo "redis RSS: $(grep VmRSS /proc/$RPID/status)"
for p in "${PIDS[@]}"; do echo "node $p RSS after: $(grep VmRSS /proc/$p/status)"; done
kill "${PIDS[@]}" $RPID; wait
