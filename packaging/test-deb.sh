#!/usr/bin/env bash
# The package in a fresh Debian 12 root: lintian; apt-get install with its dependencies; the binary,
# units, conffiles, user, state dir and token as they should be; doctor and the daemon running in
# the root (chroot, loopback test ports) with a simulated client watching the sample match; an
# upgrade that keeps an edited conffile and the token; a purge that leaves no file of ours.
# The debootstrap root is cached (MATCHSTREAM_ROOT_CACHE); each run works on a copy, inside a
# private mount namespace so nothing it mounts outlives it.
set -euo pipefail
deb=$(readlink -f "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${MATCHSTREAM_ROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/matchstream/bookworm-minbase}

if [ -z "${MATCHSTREAM_IN_NS:-}" ]; then
	for tool in debootstrap lintian; do
		if ! command -v $tool >/dev/null; then
			[ "$(id -u)" = 0 ] || { echo "test-deb: $tool is missing: sudo apt-get install $tool" >&2; exit 1; }
			echo "test-deb: installing $tool"
			apt-get update -qq && apt-get install -y -qq $tool >/dev/null
		fi
	done
	echo "test-deb: lintian"
	lintian --fail-on error,warning "$deb"
	if [ ! -d "$cache" ]; then
		echo "test-deb: debootstrap bookworm into $cache (once)"
		mkdir -p "$(dirname "$cache")"
		debootstrap --variant=minbase bookworm "$cache.tmp" http://deb.debian.org/debian >/dev/null
		mv "$cache.tmp" "$cache"
	fi
	exec env MATCHSTREAM_IN_NS=1 unshare --mount --propagation private "$0" "$@"
fi

work=$(mktemp -d /tmp/matchstream-test-deb.XXXXXX)
root=$work/root
daemon_pid=
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
	umount -l "$root/proc" "$root/dev" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
step() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
in_root() { chroot "$root" "$@"; }

step "fresh root from the cache"
cp -a "$cache" "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
export DEBIAN_FRONTEND=noninteractive
in_root apt-get update -qq
# adduser is our dependency: installed before the snapshot, so the purge comparison sees only us.
in_root apt-get install -y -qq adduser >/dev/null

# The system user stays after a purge, as Debian policy has it: adduser's backups of the user
# database (/etc/shadow- and friends) and its lock under /run are that user's, not files of ours.
listing() { (cd "$root" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./tmp -o -path ./run -o -path ./var/lib/dpkg \
	-o -path ./var/lib/apt -o -path ./var/cache -o -path ./var/log \) -prune -o -print | grep -v '^\./etc/[a-z]*-$' | sort); }
listing > "$work/before"

step "apt-get install ./$(basename "$deb")"
cp "$deb" "$root/tmp/matchstream.deb"
in_root apt-get install -y -qq /tmp/matchstream.deb >/dev/null

step "files, owners and modes"
for f in /usr/bin/matchstream /usr/lib/systemd/system/matchstream.socket /usr/lib/systemd/system/matchstream-api.socket \
	/usr/lib/systemd/system/matchstream.service /usr/lib/sysctl.d/60-matchstream.conf /usr/lib/sysusers.d/matchstream.conf \
	/usr/share/man/man1/matchstream.1.gz /usr/share/bash-completion/completions/matchstream \
	/usr/share/zsh/vendor-completions/_matchstream \
	/usr/share/matchstream/examples/elp-tig-2011-09-10.jsonl /usr/share/doc/matchstream/copyright \
	/usr/share/matchstream/grafana-dashboard.json /usr/share/matchstream/matchstream-alerts.yml; do
	[ -e "$root$f" ] || fail "$f missing"
done
grep -qx /etc/matchstream/matchstream.toml "$root/var/lib/dpkg/info/matchstream.conffiles" || fail "config is not a conffile"
grep -qx /etc/modprobe.d/matchstream-conntrack.conf "$root/var/lib/dpkg/info/matchstream.conffiles" || fail "modprobe file is not a conffile"
in_root getent passwd matchstream >/dev/null || fail "no matchstream user"
[ "$(in_root stat -c '%U:%G %a' /var/lib/matchstream)" = "matchstream:matchstream 750" ] || fail "state dir: $(in_root stat -c '%U:%G %a' /var/lib/matchstream)"
[ "$(in_root stat -c '%U:%G %a' /etc/matchstream/watcher.token)" = "root:matchstream 640" ] || fail "token: $(in_root stat -c '%U:%G %a' /etc/matchstream/watcher.token)"
token=$(cat "$root/etc/matchstream/watcher.token")
[ ${#token} -ge 32 ] || fail "token too short"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(port); s0=$(port); adm=$(port)
step "doctor in the root"
out=$(in_root matchstream doctor --config /etc/matchstream/matchstream.toml --target-connections 1000 --backlog 1024 \
	--api 127.0.0.1:$api --stream 127.0.0.1:$s0-$s0 || true)
grep -q "^doctor: 1000 connections:" <<<"$out" || fail "doctor did not run: $out"

step "the daemon in the root as the matchstream user, and a client watching the sample match"
chroot --userspec=matchstream:matchstream "$root" /usr/bin/matchstream serve --config /etc/matchstream/matchstream.toml \
	--api 127.0.0.1:$api --admin 127.0.0.1:$adm --stream 127.0.0.1:$s0-$s0 --state-dir /var/lib/matchstream --log-level warn &
daemon_pid=$!
for _ in $(seq 100); do
	python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$api/healthz')" 2>/dev/null && break
	sleep 0.1
done
# The packaged binary drives the daemon from outside the root (the chroot has no /dev/fd for <(...)).
"$root/usr/bin/matchstream" watcher --api http://127.0.0.1:$api --token "$token" --speed 0 -q \
	<(head -1 "$here/testdata/matches/elp-tig-2011-09-10.jsonl") >/dev/null
"$root/usr/bin/matchstream" client --api http://127.0.0.1:$api --match elp-tig-2011-09-10 -n 5 --protocol 3 --timeout 60s > "$work/client" 2>&1 &
client_pid=$!
sleep 0.5
"$root/usr/bin/matchstream" watcher --api http://127.0.0.1:$api --token "$token" --speed 0 -q \
	--match elp-tig-2011-09-10 <(tail -n +2 "$here/testdata/matches/elp-tig-2011-09-10.jsonl") >/dev/null
wait $client_pid || fail "client: $(cat "$work/client")"
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$adm/metrics').read().decode())" |
	grep -q '^matchstream_events_accepted_total 31$' || fail "no metrics on the admin listener"
grep -q "^ok: 5 users watched elp-tig-2011-09-10" "$work/client" || fail "client: $(cat "$work/client")"
kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=
[ -s "$root/var/lib/matchstream/matchstream.db" ] || fail "no store in the state dir"

step "upgrade keeps an edited conffile and the token"
echo "# edited by the operator" >> "$root/etc/matchstream/matchstream.toml"
rm -rf "$work/pkg" && dpkg-deb -R "$deb" "$work/pkg"
sed -i 's/^Version: \(.*\)$/Version: \1.1/' "$work/pkg/DEBIAN/control"
dpkg-deb -b "$work/pkg" "$root/tmp/upgrade.deb" >/dev/null
in_root apt-get install -y -qq -o Dpkg::Options::=--force-confold /tmp/upgrade.deb >/dev/null
grep -q "# edited by the operator" "$root/etc/matchstream/matchstream.toml" || fail "upgrade lost the edited conffile"
[ "$(cat "$root/etc/matchstream/watcher.token")" = "$token" ] || fail "upgrade changed the token"
version=$(in_root dpkg-query -W -f='${Version}\n' matchstream)
grep -q '\.1$' <<<"$version" || fail "not upgraded: $version"

step "apt-get purge leaves no file of ours"
in_root apt-get purge -y -qq matchstream >/dev/null
rm -f "$root/tmp/matchstream.deb" "$root/tmp/upgrade.deb"
listing > "$work/after"
if ! diff -u "$work/before" "$work/after"; then fail "purge left files behind (diff above)"; fi
step "OK"
