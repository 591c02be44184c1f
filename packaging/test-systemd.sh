#!/usr/bin/env bash
# The package under real systemd 252: PID 1 of a private PID+mount+net+UTS+IPC namespace booted in a
# Debian 12 root (debootstrap minbase + systemd, cached). In it: the sockets start at boot, a client
# connecting starts the service (doctor as ExecStartPre), watches the sample match; the service is
# restarted twice while clients keep connecting and none is refused, then three times mid-match with
# 2,000 clients watching, each of whom gets every event once, and reloaded with a new watcher
# token, the same process keeping every client; `systemctl status` shows the
# STATUS= line; `journalctl -u matchstream` has structured fields. Then TLS: a certificate through
# the certbot deploy hook, TLS and plain clients kept across a restart (their record state in the
# parcel) and a renewal the hook reloads. Bounded; the namespace and its
# mounts die with it. This machine's settings are untouched: systemd-sysctl is masked (fs.* are
# global), and the per-namespace socket knobs are set inside the private network namespace only.
set -euo pipefail
deb=$(readlink -f "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
base=${MATCHSTREAM_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/matchstream/bookworm-minbase}
cache=$base-systemd
step() { echo "test-systemd: $*"; }
# The reason is printed after the journal as well: CI keeps only the tail of what a run printed.
fail() {
	echo "test-systemd: FAIL: $*" >&2
	[ -n "${NS:-}" ] && $NS journalctl -u matchstream --no-pager -n 30 >&2 || true
	echo "test-systemd: FAIL: $*" >&2
	exit 1
}

[ -d "$base" ] || { echo "test-systemd: run packaging/test-deb.sh first (it builds $base)" >&2; exit 1; }
if [ ! -d "$cache" ]; then
	step "adding systemd to a copy of the root (once)"
	rm -rf "$cache.tmp" && cp -a "$base" "$cache.tmp"
	cp /etc/resolv.conf "$cache.tmp/etc/resolv.conf"
	unshare --mount --propagation private sh -c "mount -t proc proc '$cache.tmp/proc' && mount --bind /dev '$cache.tmp/dev' &&
		DEBIAN_FRONTEND=noninteractive chroot '$cache.tmp' sh -c 'apt-get update -qq && apt-get install -y -qq systemd systemd-sysv adduser >/dev/null'"
	mv "$cache.tmp" "$cache"
fi

work=$(mktemp -d /tmp/matchstream-test-systemd.XXXXXX)
root=$work/root
pid1=
ns=
cleanup() {
	# Killing PID 1 of the namespace ends every process in it, and its mounts go with it.
	[ -n "$pid1" ] && kill -9 "$pid1" 2>/dev/null || true
	[ -n "$ns" ] && pkill -9 -P "$ns" 2>/dev/null || true
	for _ in $(seq 50); do [ -n "$ns" ] && kill -0 "$ns" 2>/dev/null || break; sleep 0.1; done
	rm -rf "$work"
}
trap cleanup EXIT

step "install the package in a copy of the root"
cp -a "$cache" "$root"
cp "$deb" "$root/root/matchstream.deb"
unshare --mount --propagation private sh -c "mount -t proc proc '$root/proc' && mount --bind /dev '$root/dev' &&
	DEBIAN_FRONTEND=noninteractive chroot '$root' apt-get install -y -qq /root/matchstream.deb >/dev/null"
ln -sf /dev/null "$root/etc/systemd/system/systemd-sysctl.service"
mkdir -p "$root/etc/systemd/system/matchstream.service.d"
cat > "$root/etc/systemd/system/matchstream.service.d/test-sandbox.conf" <<'DROPIN'
# Test only: inside this nested sandbox systemd cannot set up the namespaces these directives need
# (the service fails with 226/NAMESPACE). The shipped unit keeps them all.
[Service]
PrivateTmp=no
PrivateDevices=no
PrivateUsers=no
PrivateMounts=no
ProtectSystem=no
ProtectHome=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
DROPIN
# A target this machine carries: its open files are capped at 20,000 per process.
sed -i 's/^target-connections = .*/target-connections = 1000/' "$root/etc/matchstream/matchstream.toml"
cp "$here/testdata/matches/elp-tig-2011-09-10.jsonl" "$root/root/match.jsonl"
head -1 "$root/root/match.jsonl" > "$root/root/start.jsonl"
tail -n +2 "$root/root/match.jsonl" > "$root/root/rest.jsonl"
# A second match, live during the restarts: the same events under another start date (and id).
sed -E 's/"start_date": ?"2011-09-10"/"start_date": "2011-09-11"/' "$root/root/start.jsonl" > "$root/root/start2.jsonl"
sed -n 2,9p "$root/root/match.jsonl" > "$root/root/part1.jsonl"
sed -n 10,17p "$root/root/match.jsonl" > "$root/root/part2.jsonl"
sed -n 18,25p "$root/root/match.jsonl" > "$root/root/part3.jsonl"
sed -n '26,$p' "$root/root/match.jsonl" > "$root/root/part4.jsonl"

cat > "$work/boot.sh" <<BOOT
#!/bin/sh
set -e
mount --make-rprivate /
mount -t proc proc $root/proc
mount -t sysfs sys $root/sys
mount -t cgroup2 cgroup2 $root/sys/fs/cgroup
mount -t tmpfs tmpfs $root/run
mount -t tmpfs tmpfs $root/tmp
mount --bind /dev $root/dev
ip link set lo up 2>/dev/null || true
sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
exec chroot $root /lib/systemd/systemd --system --log-target=console --log-level=warning
BOOT
chmod +x "$work/boot.sh"
step "boot systemd as PID 1 of a private namespace"
unshare --pid --fork --mount --uts --ipc --net "$work/boot.sh" > "$work/boot.log" 2>&1 &
ns=$!
for _ in $(seq 100); do
	pid1=$(pgrep -f "^/lib/systemd/systemd --system --log-target=console" | while read -r p; do
		[ "$(readlink /proc/$p/root)" = "$root" ] && echo "$p"; done | head -1 || true)
	[ -n "$pid1" ] && break
	sleep 0.1
done
[ -n "$pid1" ] || fail "systemd did not start: $(cat "$work/boot.log")"
NS="nsenter -t $pid1 -m -u -i -n -p -r -w/"
for _ in $(seq 200); do
	state=$($NS systemctl is-system-running 2>/dev/null || true)
	case "$state" in running|degraded) break;; esac
	sleep 0.1
done
$NS systemctl is-active --quiet matchstream.socket || fail "matchstream.socket is not listening after boot"
$NS systemctl is-active --quiet matchstream-api.socket || fail "matchstream-api.socket is not listening after boot"
$NS systemctl is-active --quiet matchstream.service && fail "the service started before any client"

# subscribers ID: the subscriber count of a match, from GET /matches inside the namespace (the
# minbase root has no curl or python: bash's /dev/tcp does).
subscribers() {
	$NS bash -c 'exec 3<>/dev/tcp/127.0.0.1/8888 && printf "GET /matches HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
		grep -o "\"id\":\"$1\"[^}]*\"subscribers\":[0-9]*" | grep -o '[0-9]*$' || echo 0
}

step "a client connecting starts the service; doctor runs as ExecStartPre"
$NS timeout 60 matchstream watcher --api http://127.0.0.1:8888 --token-file /etc/matchstream/watcher.token --speed 0 -q /root/start.jsonl >/dev/null
$NS systemctl is-active --quiet matchstream.service || fail "socket activation did not start the service"
# The packaged config's admin listener serves the metrics on this host.
$NS bash -c 'exec 3<>/dev/tcp/127.0.0.1/8889 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
	grep -q '^matchstream_events_accepted_total 1$' || fail "the admin listener (127.0.0.1:8889) has no metrics"
# Output is read whole before grep sees it: journalctl dies of SIGPIPE (141) when its reader stops
# early, so `journalctl | grep -q` under pipefail fails whenever the match is not in its last write.
journal=$($NS journalctl -u matchstream --no-pager)
grep -q "doctor: 1000 connections: .* 0 FAIL" <<<"$journal" || fail "doctor did not run as ExecStartPre"
$NS timeout 60 matchstream client --api http://127.0.0.1:8888 --match elp-tig-2011-09-10 -n 20 --protocol 3 --timeout 50s > "$work/client" 2>&1 &
client=$!
for _ in $(seq 300); do
	[ "$(subscribers elp-tig-2011-09-10)" -ge 20 ] && break
	sleep 0.1
done
[ "$(subscribers elp-tig-2011-09-10)" -ge 20 ] || fail "20 clients did not subscribe within 30 s: $(cat "$work/client")"
$NS timeout 60 matchstream watcher --api http://127.0.0.1:8888 --token-file /etc/matchstream/watcher.token --speed 0 -q \
	--match elp-tig-2011-09-10 /root/rest.jsonl >/dev/null
wait $client || fail "client: $(cat "$work/client")"
grep -q "^ok: 20 users watched elp-tig-2011-09-10 to the end (protocol 3): 30 events each" "$work/client" || fail "client: $(cat "$work/client")"

step "systemctl status shows READY's STATUS= line; the journal has structured fields"
status=$($NS systemctl status matchstream.service --no-pager || true) # exits 3 for some states; the text is what counts
grep -Eq 'Status: "[0-9]+ connections on 8 ports, [0-9]+ live matches' <<<"$status" || fail "no STATUS= in systemctl status: $status"
journal=$($NS journalctl -u matchstream -o verbose --no-pager)
grep -q "SOCKET_ACTIVATED=true" <<<"$journal" || fail "no structured fields in the journal"

step "restart twice while clients keep connecting: none refused"
$NS timeout 60 matchstream client --api http://127.0.0.1:8888 --match elp-tig-2011-09-10 -n 2000 -c 4 --protocol 1 --timeout 50s > "$work/restart" 2>&1 &
client=$!
sleep 0.5
before=$($NS systemctl show -p MainPID --value matchstream.service)
$NS systemctl restart matchstream.service
$NS systemctl restart matchstream.service
after=$($NS systemctl show -p MainPID --value matchstream.service)
[ "$before" != "$after" ] || fail "the service was not restarted"
wait $client || fail "clients during the restarts: $(cat "$work/restart")"
grep -q "^ok: 2000 users" "$work/restart" || fail "clients during the restarts: $(cat "$work/restart")"

step "restart three times, then reload, mid-match with 2,000 clients watching: none dropped, every event once"
live=elp-tig-2011-09-11
watching() { [ "$(subscribers $live)" -ge "$1" ]; }
$NS timeout 60 matchstream watcher --api http://127.0.0.1:8888 --token-file /etc/matchstream/watcher.token --speed 0 -q /root/start2.jsonl >/dev/null
$NS timeout 170 matchstream client --api http://127.0.0.1:8888 --match $live -n 1000 -c 100 --protocol 1 --timeout 160s > "$work/held1" 2>&1 &
held1=$!
$NS timeout 170 matchstream client --api http://127.0.0.1:8888 --match $live -n 1000 -c 100 --protocol 3 --timeout 160s > "$work/held3" 2>&1 &
held3=$!
for _ in $(seq 600); do watching 2000 && break; sleep 0.1; done
watching 2000 || fail "2,000 clients did not all subscribe: $(subscribers $live) did"
for part in 1 2 3; do
	$NS timeout 60 matchstream watcher --api http://127.0.0.1:8888 --token-file /etc/matchstream/watcher.token --speed 0 -q \
		--match $live /root/part$part.jsonl >/dev/null
	# Six starts within 10 s pass systemd's default start limit (5 per 10 s), which guards against
	# restart loops and stays as it is; here it is reset between the test's deliberate restarts.
	$NS systemctl reset-failed matchstream.service
	$NS systemctl restart matchstream.service
	watching 2000 || fail "restart $part: fewer than 2,000 subscribers after it"
done
# systemctl reload with a new watcher token: the same process goes on, every client stays, and
# the last part is posted with the new token.
pid=$($NS systemctl show -p MainPID --value matchstream.service)
$NS bash -c 'printf "%s\n" reloaded-token-0123456789abcdef0123456789 > /etc/matchstream/watcher.token'
$NS systemctl reload matchstream.service || fail "systemctl reload failed: $($NS journalctl -u matchstream --no-pager | tail -5)"
[ "$($NS systemctl show -p MainPID --value matchstream.service)" = "$pid" ] || fail "the reload restarted the service"
watching 2000 || fail "fewer than 2,000 subscribers after the reload"
$NS journalctl -u matchstream --no-pager | grep -q "reload: watcher token replaced" || fail "the reload did not replace the token"
$NS timeout 60 matchstream watcher --api http://127.0.0.1:8888 --token reloaded-token-0123456789abcdef0123456789 --speed 0 -q \
	--match $live /root/part4.jsonl >/dev/null || fail "the new token was refused after the reload"
wait $held1 || fail "v1 clients across the restarts: $(cat "$work/held1")"
wait $held3 || fail "v3 clients across the restarts: $(cat "$work/held3")"
grep -q "^ok: 1000 users watched $live to the end (protocol 1): 30 events each" "$work/held1" || fail "v1: $(cat "$work/held1")"
grep -q "^ok: 1000 users watched $live to the end (protocol 3): 30 events each" "$work/held3" || fail "v3: $(cat "$work/held3")"
taken=$($NS journalctl -u matchstream --no-pager -o verbose | grep -c "^ *RESUMED=2000$" || true)
[ "$taken" = 3 ] || fail "want 3 hand-overs of 2,000 clients in the journal, found $taken"
[ "$($NS systemctl show -p NFileDescriptorStore --value matchstream.service)" = 0 ] || fail "the fd store is not empty after the last start"
step "TLS: certbot's certificate through the deploy hook; TLS and plain clients kept across a restart and a renewal's reload"
# A private CA signs the certificates, as a public one signs certbot's: clients trust it, and a
# renewed certificate with it. mkcert DIR DAYS: a certificate for 127.0.0.1 in certbot's layout.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=test CA" \
	-keyout "$work/ca.key" -out "$root/root/ca.pem" 2>/dev/null || fail "openssl could not make a test CA"
mkcert() {
	mkdir -p "$1"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
		-keyout "$1/privkey.pem" -out "$work/leaf.csr" 2>/dev/null &&
		openssl x509 -req -in "$work/leaf.csr" -CA "$root/root/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
			-CAserial "$work/ca.srl" -days "$2" -extfile <(printf "subjectAltName=IP:127.0.0.1\n") -out "$1/fullchain.pem" 2>/dev/null ||
		fail "openssl could not make a test certificate"
}
# From the admin listener, which stays plain HTTP on loopback once the API speaks HTTPS.
subscribed() {
	$NS bash -c 'exec 3<>/dev/tcp/127.0.0.1/8889 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
		grep "^matchstream_match_subscribers{match=\"$1\"" | awk '{print $2}' | grep . || echo 0
}
mkcert "$root/root/le/live/stream" 10
$NS env RENEWED_LINEAGE=/root/le/live/stream /usr/share/matchstream/certbot-deploy-hook || fail "the certbot deploy hook failed"
modes=$($NS stat -c '%a %U:%G' /etc/matchstream/tls /etc/matchstream/tls/fullchain.pem /etc/matchstream/tls/privkey.pem | tr '\n' ' ')
[ "$modes" = "750 root:matchstream 640 root:matchstream 640 root:matchstream " ] || fail "/etc/matchstream/tls: $modes"
cat >> "$root/etc/matchstream/matchstream.toml" <<'TOML'
tls-cert = "/etc/matchstream/tls/fullchain.pem"
tls-key = "/etc/matchstream/tls/privkey.pem"
stream-tls = "127.0.0.1:9443"
TOML
doctor=$($NS matchstream doctor --config /etc/matchstream/matchstream.toml 2>&1 || true)
grep -Eq "^WARN +tls certificate .*\((9|10) days\)" <<<"$doctor" || fail "doctor on a certificate expiring in 10 days: $(grep -i tls <<<"$doctor")"
$NS systemctl reset-failed matchstream.service
$NS systemctl restart matchstream.service || fail "the service did not start with TLS"
ca=/root/ca.pem
api=https://127.0.0.1:8888
m3=elp-tig-2011-09-12
sed -E 's/"start_date": ?"2011-09-10"/"start_date": "2011-09-12"/' "$root/root/start.jsonl" > "$root/root/start3.jsonl"
$NS timeout 60 matchstream watcher --api $api --token-file /etc/matchstream/watcher.token --speed 0 -q /root/start3.jsonl >/dev/null 2>&1 &&
	fail "a watcher that does not trust the certificate could post"
$NS timeout 60 matchstream watcher --api $api --ca $ca --token-file /etc/matchstream/watcher.token --speed 0 -q /root/start3.jsonl >/dev/null ||
	fail "the watcher could not post over HTTPS"
$NS timeout 170 matchstream client --api $api --ca $ca --tls --match $m3 -n 200 -c 50 --protocol 3 --timeout 160s > "$work/tls3" 2>&1 &
tls3=$!
$NS timeout 170 matchstream client --api $api --ca $ca --match $m3 -n 100 -c 50 --protocol 1 --timeout 160s > "$work/plain1" 2>&1 &
plain1=$!
for _ in $(seq 600); do [ "$(subscribed $m3)" -ge 300 ] && break; sleep 0.1; done
[ "$(subscribed $m3)" -ge 300 ] || fail "300 clients (200 over TLS) did not subscribe: $(subscribed $m3) did; $(cat "$work/tls3")"
$NS timeout 60 matchstream watcher --api $api --ca $ca --token-file /etc/matchstream/watcher.token --speed 0 -q --match $m3 /root/part1.jsonl >/dev/null
$NS systemctl reset-failed matchstream.service
$NS systemctl restart matchstream.service
[ "$(subscribed $m3)" -ge 300 ] || fail "after a restart with TLS clients: $(subscribed $m3) subscribers, want 300"
# A renewal: the hook copies it and reloads; the same process goes on, new handshakes present it.
mkcert "$root/root/le/live/stream" 90
pid=$($NS systemctl show -p MainPID --value matchstream.service)
$NS env RENEWED_LINEAGE=/root/le/live/stream /usr/share/matchstream/certbot-deploy-hook || fail "the deploy hook failed on renewal"
[ "$($NS systemctl show -p MainPID --value matchstream.service)" = "$pid" ] || fail "the renewal restarted the service"
journal=$($NS journalctl -u matchstream --no-pager)
grep -q "reload: tls certificate read" <<<"$journal" || fail "the reload did not read the renewed certificate"
doctor=$($NS matchstream doctor --config /etc/matchstream/matchstream.toml 2>&1 || true)
grep -Eq "^OK +tls certificate .*\((89|90) days\)" <<<"$doctor" || fail "doctor after the renewal: $(grep -i tls <<<"$doctor")"
$NS timeout 170 matchstream client --api $api --ca $ca --tls --match $m3 -n 10 --protocol 3 --timeout 150s > "$work/renewed" 2>&1 &
renewed=$!
for _ in $(seq 300); do [ "$(subscribed $m3)" -ge 310 ] && break; sleep 0.1; done
[ "$(subscribed $m3)" -ge 310 ] || fail "clients trusting the renewed certificate: $(cat "$work/renewed")"
for part in 2 3 4; do
	$NS timeout 60 matchstream watcher --api $api --ca $ca --token-file /etc/matchstream/watcher.token --speed 0 -q --match $m3 /root/part$part.jsonl >/dev/null
done
wait $tls3 || fail "TLS clients: $(cat "$work/tls3")"
wait $plain1 || fail "plain clients: $(cat "$work/plain1")"
wait $renewed || fail "clients after the renewal: $(cat "$work/renewed")"
grep -q "^ok: 200 users watched $m3 to the end (protocol 3): 30 events each" "$work/tls3" || fail "TLS: $(cat "$work/tls3")"
grep -q "^ok: 100 users watched $m3 to the end (protocol 1): 30 events each" "$work/plain1" || fail "plain: $(cat "$work/plain1")"
grep -q "^ok: 10 users watched $m3 to the end (protocol 3)" "$work/renewed" || fail "after the renewal: $(cat "$work/renewed")"
step "OK"
