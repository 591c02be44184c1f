package bench

import (
	"os"
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

// cpuSum reads this process's CPU time from /proc (the field after a command name that may hold
// spaces and parentheses), and it grows while the process computes.
func TestCPUSum(t *testing.T) {
	self := []int{os.Getpid()}
	before := cpuSum(self)
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for cpuSum(self) <= before {
		for i := range 1_000_000 {
			x += i
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %s while computing (%d)", before, x)
		}
	}
	if cpuSum([]int{-1}) != 0 {
		t.Fatal("a process that does not exist has CPU time")
	}
}

func TestServerTiming(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   time.Duration
	}{
		{[]string{"post;dur=0.931"}, 931 * time.Microsecond},
		{[]string{`cache;desc="hit", post ; DUR = "2.5" ;desc=x`}, 2500 * time.Microsecond},
		{[]string{"db;dur=9", "post;dur=1"}, time.Millisecond},
		{[]string{"poster;dur=1"}, 0},
		{[]string{"post"}, 0},
		{[]string{"post;dur=-1"}, 0},
		{[]string{"post;dur=NaN"}, 0},
		{[]string{"post;dur=1e300"}, 0},
		{nil, 0},
	} {
		if got := serverTiming(tc.values, "post"); got != tc.want {
			t.Errorf("serverTiming(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

func FuzzServerTiming(f *testing.F) {
	for _, s := range []string{"post;dur=0.931", `a, post;desc="x";dur=2`, "post;dur=", ";;,,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := serverTiming([]string{v}, "post"); d < 0 || d > 1e9*time.Millisecond {
			t.Fatalf("serverTiming(%q) = %v", v, d)
		}
	})
}
