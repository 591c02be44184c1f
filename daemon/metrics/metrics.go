// Package metrics exposes the daemon's state in the Prometheus text format: connections per port
// and per protocol version (Server-Sent Events as "sse"), long-polls waiting, subscribers per match, events, deliveries, delivery latency and queue
// depth, slow-consumer cuts, refused handshakes, store latency, and the Go runtime and process.
// Everything is read from counters the parts already keep; one registry per daemon, no globals.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"matchstream/daemon/hub"
	"matchstream/daemon/listen"
	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
	"matchstream/daemon/stream"
)

// New builds the registry and installs the histograms the registry and hubs observe into.
// certExpiry, when not nil, is when the TLS certificate in use expires.
func New(reg *live.Registry, lns *listen.Set, streams *stream.Server, certExpiry func() time.Time) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The two histograms every delivery observes are the hub's own, which the fan-out workers
	// fill a batch at a time; they are exposed as ordinary Prometheus histograms.
	latency := hub.NewHistogram(prometheus.ExponentialBuckets(0.0005, 2, 14))
	queue := hub.NewHistogram([]float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512})
	store := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "matchstream_store_append_seconds",
		Help: "Time to make a posted batch durable in the store.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)})
	reg.Stats.Latency, reg.Stats.QueueDepth, reg.StoreLatency = latency, queue, store
	r.MustRegister(store, &collector{reg: reg, lns: lns, streams: streams, certExpiry: certExpiry},
		&histogram{latencyDesc, latency}, &histogram{queueDesc, queue})
	return r
}

var (
	latencyDesc = prometheus.NewDesc("matchstream_delivery_latency_seconds",
		"From an event's post reaching the daemon (store commit included) to its write to a client socket.", nil, nil)
	queueDesc = prometheus.NewDesc("matchstream_client_queue_frames",
		"A client's backlog, in frames, each time a batch of events reaches it.", nil, nil)
)

// histogram exposes a hub.Histogram.
type histogram struct {
	desc *prometheus.Desc
	h    *hub.Histogram
}

func (h *histogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *histogram) Collect(ch chan<- prometheus.Metric) {
	n, sum, buckets := h.h.Snapshot()
	ch <- prometheus.MustNewConstHistogram(h.desc, n, sum, buckets)
}

type collector struct {
	reg        *live.Registry
	lns        *listen.Set
	streams    *stream.Server
	certExpiry func() time.Time // nil: no certificate
}

var (
	connsDesc = prometheus.NewDesc("matchstream_connections", "Open client connections per port: the stream ports, and the API port's event streams.", []string{"port"}, nil)
	protoDesc = prometheus.NewDesc("matchstream_subscribers_by_protocol", "Subscribed clients per protocol version.", []string{"protocol"}, nil)
	subsDesc  = prometheus.NewDesc("matchstream_match_subscribers", "Subscribed clients per match.", []string{"match", "state"}, nil)
	seqDesc   = prometheus.NewDesc("matchstream_match_events", "Events of each match (its last seq).", []string{"match"}, nil)
	accDesc   = prometheus.NewDesc("matchstream_events_accepted_total", "Events made durable and broadcast.", nil, nil)
	delDesc   = prometheus.NewDesc("matchstream_deliveries_total", "Frames written to client sockets.", nil, nil)
	slowDesc  = prometheus.NewDesc("matchstream_slow_consumer_disconnects_total", "Clients cut for a full queue or a write timeout.", nil, nil)
	goneDesc  = prometheus.NewDesc("matchstream_write_errors_total", "Clients gone while being written to.", nil, nil)
	maxQDesc  = prometheus.NewDesc("matchstream_client_queue_max_frames", "The longest backlog any client has had.", nil, nil)
	pollDesc  = prometheus.NewDesc("matchstream_longpoll_waiting", "Long-poll requests waiting for an event.", nil, nil)
	wfDesc    = prometheus.NewDesc("matchstream_store_writes_failing", "1 while the store refuses appends (posts get 503), 0 once one succeeds again.", nil, nil)
	wbDesc    = prometheus.NewDesc("matchstream_store_written_back_total", "Events this node wrote back to a shared store that had lost them (a Redis restarted without its data, a failover).", nil, nil)
	divDesc   = prometheus.NewDesc("matchstream_store_diverged_total", "Matches whose history in the store differed from this node's: the node took the store's and cut their clients.", nil, nil)
	hoDesc    = prometheus.NewDesc("matchstream_handover_failures_total", "Hand-overs that failed: to a successor (this process went on serving), or from a predecessor (the clients it handed on were lost).", nil, nil)
	hsDesc    = prometheus.NewDesc("matchstream_handshake_errors_total", "Connect lines answered with ERROR:, by code.", []string{"code"}, nil)
	tlsDesc   = prometheus.NewDesc("matchstream_tls_handshakes_total", "TLS handshakes completed on the TLS stream ports.", nil, nil)
	tlsFDesc  = prometheus.NewDesc("matchstream_tls_failures_total", "TLS handshakes that failed on the TLS stream ports, and connections cut for a record that did not open.", nil, nil)
	certDesc  = prometheus.NewDesc("matchstream_tls_certificate_expiry_timestamp_seconds", "When the TLS certificate in use expires (Unix time); a reload (SIGHUP) reads a renewed one.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connsDesc, protoDesc, subsDesc, seqDesc, accDesc, delDesc, slowDesc, goneDesc, maxQDesc, hsDesc, hoDesc, pollDesc, wfDesc, wbDesc, divDesc, tlsDesc, tlsFDesc, certDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ports := c.lns.Stream
	if c.lns.Events != nil {
		ports = append(ports[:len(ports):len(ports)], c.lns.Events)
	}
	for _, p := range ports {
		ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(p.Conns.Load()), strconv.Itoa(p.Number()))
	}
	st := &c.reg.Stats
	for v := 1; v <= 3; v++ {
		ch <- prometheus.MustNewConstMetric(protoDesc, prometheus.GaugeValue, float64(st.ByVersion[v].Load()), strconv.Itoa(v))
	}
	ch <- prometheus.MustNewConstMetric(protoDesc, prometheus.GaugeValue, float64(st.ByVersion[protocol.VersionSSE].Load()), "sse")
	ch <- prometheus.MustNewConstMetric(pollDesc, prometheus.GaugeValue, float64(c.reg.LongPolls.Load()))
	failing := 0.0
	if _, err := c.reg.WriteFailure(); err != nil {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(wfDesc, prometheus.GaugeValue, failing)
	for _, m := range c.reg.List() {
		state := "live"
		if m.State.Ended() {
			state = "ended"
		}
		ch <- prometheus.MustNewConstMetric(subsDesc, prometheus.GaugeValue, float64(m.Subscribers), m.State.ID, state)
		ch <- prometheus.MustNewConstMetric(seqDesc, prometheus.GaugeValue, float64(m.State.Seq), m.State.ID)
	}
	ch <- prometheus.MustNewConstMetric(accDesc, prometheus.CounterValue, float64(c.reg.EventsAccepted.Load()))
	ch <- prometheus.MustNewConstMetric(wbDesc, prometheus.CounterValue, float64(c.reg.WrittenBack.Load()))
	ch <- prometheus.MustNewConstMetric(divDesc, prometheus.CounterValue, float64(c.reg.Diverged.Load()))
	ch <- prometheus.MustNewConstMetric(hoDesc, prometheus.CounterValue, float64(c.streams.HandoverFailures.Load()))
	ch <- prometheus.MustNewConstMetric(delDesc, prometheus.CounterValue, float64(st.Deliveries.Load()))
	ch <- prometheus.MustNewConstMetric(slowDesc, prometheus.CounterValue, float64(st.SlowDropped.Load()))
	ch <- prometheus.MustNewConstMetric(goneDesc, prometheus.CounterValue, float64(st.WriteErrored.Load()))
	ch <- prometheus.MustNewConstMetric(maxQDesc, prometheus.GaugeValue, float64(st.MaxQueue.Load()))
	for code, n := range c.streams.Refused {
		ch <- prometheus.MustNewConstMetric(hsDesc, prometheus.CounterValue, float64(n.Load()), code)
	}
	ch <- prometheus.MustNewConstMetric(tlsDesc, prometheus.CounterValue, float64(c.streams.TLSHandshakes.Load()))
	ch <- prometheus.MustNewConstMetric(tlsFDesc, prometheus.CounterValue, float64(c.streams.TLSFailed.Load()))
	if c.certExpiry != nil {
		ch <- prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue, float64(c.certExpiry().Unix()))
	}
}
