//go:build baselines

package bench

// Baselines: this binary carries the baseline servers and the MQTT client (built with
// -tags baselines, as `make bench` does).
const Baselines = true
