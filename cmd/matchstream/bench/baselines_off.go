//go:build !baselines

package bench

import (
	"context"
	"io"
)

// Baselines is false in the shipped binary: the baseline servers (floor, naive) and the MQTT client
// for mosquitto are load-test tools an appliance has no use for, so they are built only with
// -tags baselines (`make bench` builds bin/matchstream-bench so). The rest of bench works without.
const Baselines = false

// ServeBaseline is not in this build.
func ServeBaseline(string, string, int, io.Reader, io.Writer) error { return ErrNoBaselines }

func runMosquitto(context.Context, *Config) (*Figures, error) { return nil, ErrNoBaselines }

func runNATS(context.Context, *Config, bool) (*Figures, error) { return nil, ErrNoBaselines }
