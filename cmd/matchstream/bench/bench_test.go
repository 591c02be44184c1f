package bench

import (
	"testing"
	"time"
)

func TestStampOf(t *testing.T) {
	for in, want := range map[string]int64{
		`{"match":"m","seq":2,"kind":"comment","comment":"bench t=1700000000123"}` + "\n": 1700000000123,
		"2011-09-10 21:00:53: comment:\n":                                                 0,
		"\x30\x1fmatchstream/benchbench t=42\n":                                           42,
		"bench t=\n":                                                                      0,
	} {
		if got := stampOf([]byte(in)); got != want {
			t.Errorf("stampOf(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	if pct(ds, 0.5) != 3 || pct(ds, 1) != 5 || pct(nil, 0.5) != 0 || ds[0] != 5 {
		t.Errorf("pct wrong or sorted its input: %v", ds)
	}
}
