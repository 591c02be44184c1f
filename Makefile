# MatchStream. `make run` to try it, `make test` before every commit.
SHELL    := /bin/bash
GO       ?= go
# Package versions must start with a digit: 0.1.0 plus the commit (and ~dirty for local builds).
VERSION  ?= 0.1.0+git$(shell git describe --always --dirty=.dirty 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/matchstream
RUNDIR   := run
SPEED    ?= 4
# A count of executions, not a duration: with a duration, Go 1.26's fuzz coordinator can race its
# own deadline on a loaded machine and fail a target with "context deadline exceeded" and no input
# (go.dev/issue/75804, fixed in Go 1.27; CI met it on FuzzServerTiming). A count has no deadline.
FUZZTIME ?= 30000x
# package:target for every fuzz target; `make test` runs each for FUZZTIME, `make fuzz` for longer.
FUZZ := ./daemon/protocol:FuzzParseConnect ./daemon/protocol:FuzzRenderV1 ./daemon/match:FuzzDecodeEvent ./daemon/match:FuzzApply \
        ./cmd/matchstream/matchfile:FuzzRead ./daemon/api:FuzzPostEvents ./daemon/api:FuzzReadRequests \
        ./cmd/matchstream/bench:FuzzServerTiming ./daemon/tlsrecord:FuzzOpen

NFPM     := bin/nfpm
NFPM_VERSION := v2.44.0
DEB      := matchstream_$(VERSION)_amd64.deb

.PHONY: check-monitoring chaos test-ha bench-binary nats-server stress-restart soak build run test test-deps vet unit fuzz-smoke fuzz bench lint clean deb rpm test-deb test-browser

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/matchstream

# A demo daemon on 127.0.0.1 (API :8888, stream :9000-9007) with a fresh store under ./run, and the
# sample match replayed SPEED times faster than real time. Watch it with
#   nc 127.0.0.1 9000   then type   VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-10
run: build
	@rm -rf $(RUNDIR) && mkdir -p $(RUNDIR)
	@$(BIN) serve --config /dev/null --state-dir $(RUNDIR) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid' INT TERM EXIT; \
	sleep 0.3; kill -0 $$pid 2>/dev/null || exit 1; \
	echo; echo "MatchStream is up. In another terminal:"; \
	echo "  nc 127.0.0.1 9000     and type   VERSION:1:CONNECT:me:MATCH:elp-tig-2011-09-10"; \
	echo "  curl -s http://127.0.0.1:8888/matches"; \
	echo "Replaying the sample match at $(SPEED)x (the watcher waits for the API); Ctrl-C stops the daemon."; echo; \
	$(BIN) watcher --token-file $(RUNDIR)/watcher.token --speed $(SPEED) testdata/matches/elp-tig-2011-09-10.jsonl && \
	echo "The match is over; the daemon keeps serving it (status, then close). Ctrl-C to stop."; \
	wait $$pid

test: test-deps vet unit fuzz-smoke check-monitoring

# The Redis store's tests run a real redis-server on a free port, and the zsh completion is run by
# a real zsh, and the TLS ports are tested against openssl s_client; never skipped.
test-deps:
	@for p in redis-server zsh openssl; do command -v $$p >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "make test: installing $$p with apt-get"; \
	    apt-get update -qq && apt-get install -y -qq $$p >/dev/null; \
	  else echo "make test needs $$p: sudo apt-get install $$p"; exit 1; fi; }; done

vet:
	$(GO) vet ./...
	$(GO) vet -tags browser ./cmd/matchstream
	$(GO) vet -tags baselines ./cmd/...
	$(GO) vet -tags ha ./cmd/matchstream
	$(GO) vet -tags chaos ./cmd/matchstream
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -tags baselines ./cmd/matchstream/bench

# A failing input is saved under testdata/fuzz/, where it stays in the seed corpus of every later
# run: commit it with the fix. No run is retried (the deadline race that made one fail without an
# input is gone with a count budget, FUZZTIME above).
fuzz-smoke:
	@set -e; for t in $(FUZZ); do \
	  echo "fuzz $${t#*:} ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) $${t%%:*} >/tmp/matchstream-fuzz.log 2>&1 || { \
	    echo "fuzz $${t#*:} failed:"; cat /tmp/matchstream-fuzz.log; exit 1; }; \
	done

fuzz:
	$(MAKE) fuzz-smoke FUZZTIME=2000000x

# A Redis failover under load (a primary, a replica, three sentinels, two daemons, 500 clients, the
# primary killed with -9 mid-match): nothing acknowledged is lost. About a minute; in CI.
test-ha: test-deps
	$(GO) test -tags ha -count=1 -run '^TestFailover' -v ./cmd/matchstream

# Fault injection, not in CI: 3 nodes on Redis with Sentinel, v3 clients that reconnect with FROM,
# a poster; kill -9 of random nodes and of the Redis primary for CHAOS; then the checker's table
# (clients, events, gaps, duplicates, acknowledged but lost). One run is in docs/performance.md.
CHAOS ?= 1m
chaos: test-deps
	MATCHSTREAM_CHAOS=$(CHAOS) $(GO) test -tags chaos -count=1 -timeout 0 -run '^TestChaos$$' -v ./cmd/matchstream

# The live match page in a real browser: Debian's chromium driven by chromedriver (installed with
# apt-get when run as root). The screenshot is saved to $(ARTIFACTS)/browser/match-page.png.
ARTIFACTS ?= artifacts
test-browser:
	@command -v chromedriver >/dev/null && command -v chromium >/dev/null || { 	  if [ "$$(id -u)" = 0 ]; then echo "make test-browser: installing chromium and chromium-driver with apt-get"; 	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; 	  else echo "make test-browser needs: sudo apt-get install chromium chromium-driver"; exit 1; fi; }
	MATCHSTREAM_ARTIFACTS=$(abspath $(ARTIFACTS)) $(GO) test -tags browser -count=1 -run '^TestBrowser' -v ./cmd/matchstream

# Go benchmarks, then a short bench run against a spawned daemon beside both baselines. The full
# runs and their numbers are in docs/performance.md.
# One hour of matches starting and ending, clients joining and leaving, slow readers and bursts;
# goroutines and heap must be flat at the end. Not in CI. SOAK=10m for a shorter run.
SOAK ?= 1h
soak:
	MATCHSTREAM_SOAK=$(SOAK) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./cmd/matchstream

# TestRestartKeepsClients RUNS times in a row while two busy loops at a higher priority starve the
# CPU: the proof that no client is dropped by a restart on a loaded machine. About 25 s a run.
RUNS ?= 20
stress-restart:
	$(GO) test -c -o bin/e2e.test ./cmd/matchstream
	@nice -n -5 sh -c 'while :; do :; done' & b1=$$!; nice -n -5 sh -c 'while :; do :; done' & b2=$$!; \
	trap 'kill $$b1 $$b2' EXIT; cd cmd/matchstream && for i in $$(seq $(RUNS)); do \
	  ../../bin/e2e.test -test.run '^TestRestartKeepsClients$$' -test.count=1 -test.v >/tmp/matchstream-stress.log 2>&1 || \
	    { cat /tmp/matchstream-stress.log; echo "stress-restart: run $$i of $(RUNS) failed"; exit 1; }; \
	  echo "stress-restart: run $$i of $(RUNS): $$(grep -- '^--- PASS' /tmp/matchstream-stress.log)"; \
	done

# The shipped binary has no baseline servers and no MQTT client; this one has (-tags baselines).
bench-binary:
	CGO_ENABLED=0 $(GO) build -trimpath -tags baselines -ldflags '$(LDFLAGS)' -o bin/matchstream-bench ./cmd/matchstream

# The NATS baseline (bench --baseline nats): nats-server from the Go module proxy, pinned.
NATS_VERSION := v2.15.3
nats-server: bin/nats-server
bin/nats-server:
	GOBIN=$(CURDIR)/bin $(GO) install github.com/nats-io/nats-server/v2@$(NATS_VERSION)

# The shipped alert rules, checked and unit-tested by promtool. promtool is taken out of Debian's
# prometheus package (apt-get download: nothing is installed, no service is started).
check-monitoring: bin/promtool
	bin/promtool check rules packaging/monitoring/matchstream-alerts.yml
	cd packaging/monitoring && ../../bin/promtool test rules matchstream-alerts.test.yml
bin/promtool:
	@mkdir -p bin
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; cd "$$d"; \
	  apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; \
	  dpkg-deb -x prometheus_*.deb x; cp x/usr/bin/promtool $(CURDIR)/bin/promtool
	bin/promtool --version | head -1

bench: bench-binary
	$(GO) test -run '^$$' -bench . -benchmem ./daemon/...
	bin/matchstream-bench bench --spawn -n 2000 -c 500 --events 5 --baseline floor,naive

# nfpm is built from the Go module proxy at a pinned version (never a downloaded binary).
$(NFPM):
	GOBIN=$(CURDIR)/bin $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

dist: build
	rm -rf dist && $(BIN) dist dist >/dev/null
	gzip -9n < packaging/changelog > dist/changelog.gz

deb: dist $(NFPM)
	VERSION=$(VERSION) $(NFPM) package --packager deb --target dist/

rpm: dist $(NFPM)
	VERSION=$(VERSION) $(NFPM) package --packager rpm --target dist/

# The package in a fresh Debian 12 root (debootstrap, cached): lintian, install, daemon, upgrade,
# purge; then under systemd 252 as PID 1 of a private namespace: activation, restarts, journal.
test-deb: deb
	packaging/test-deb.sh dist/matchstream_*_amd64.deb
	packaging/test-systemd.sh dist/matchstream_*_amd64.deb

lint: vet

clean:
	rm -rf bin dist $(RUNDIR)
