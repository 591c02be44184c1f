package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clients is a set of benchmark clients, in this process (fleet) or spread over worker processes
// (workers) when there are more than one process may hold open files for.
type clients interface {
	counts() (connected int, refused, timedOut, other int64)
	connectTimes() []time.Duration
	// firstTimes are, per client that got any, the times from its dial to the server's first
	// bytes: connect, connect line and status, as a user waits for them.
	firstTimes() []time.Duration
	waitReceived(k int64, timeout time.Duration) bool
	lastArrival() time.Time
	finish() []time.Duration // closes the clients, returns every delivery latency
}

func (f *fleet) counts() (int, int64, int64, int64) {
	return f.connected(), f.refused.Load(), f.timedOut.Load(), f.otherErr.Load()
}

func (f *fleet) connectTimes() []time.Duration {
	var out []time.Duration
	for _, d := range f.connect {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

func (f *fleet) firstTimes() []time.Duration {
	var out []time.Duration
	for i := range f.first {
		if d := f.first[i].Load(); d > 0 {
			out = append(out, time.Duration(d))
		}
	}
	return out
}

func (f *fleet) finish() []time.Duration {
	f.close()
	return f.latencies()
}

// workerReport is what a worker process prints when it finishes.
type workerReport struct {
	Connected int     `json:"connected"`
	Refused   int64   `json:"refused"`
	TimedOut  int64   `json:"timed_out"`
	Other     int64   `json:"other"`
	Connect   []int64 `json:"connect_ns"`
	First     []int64 `json:"first_ns"`
	Latencies []int64 `json:"latencies_ns"`
}

// ServeClients is a worker process (`matchstream bench-clients`): it connects n clients, numbered
// from offset, and answers the parent on stdin/stdout:
// "WAIT <k> <timeout ns>" → "GOT <ok> <last arrival ns>"; "END" → one JSON workerReport line.
func ServeClients(ctx context.Context, addrs, ids []string, transport, caFile string, insecure bool, offset, n, c int, in io.Reader, out io.Writer) error {
	line := func(i int) string {
		g := offset + i
		return connectLine(transport, g, ids[g%len(ids)])
	}
	var tlsCfg *tls.Config
	switch {
	case insecure:
		tlsCfg = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	case caFile != "":
		var err error
		if tlsCfg, err = ClientTLS(caFile); err != nil {
			return err
		}
	}
	fl := dialAll(ctx, n, c, addrs, line, tlsCfg, nil)
	conn, ref, to, oth := fl.counts()
	fmt.Fprintf(out, "CONNECTED %d %d %d %d\n", conn, ref, to, oth)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "WAIT":
			k, _ := strconv.ParseInt(f[1], 10, 64)
			t, _ := strconv.ParseInt(f[2], 10, 64)
			ok := fl.waitReceived(k, time.Duration(t))
			fmt.Fprintf(out, "GOT %v %d\n", ok, fl.lastArrival().UnixNano())
		case len(f) == 1 && f[0] == "END":
			rep := workerReport{Connected: conn, Refused: ref, TimedOut: to, Other: oth}
			for _, d := range fl.connectTimes() {
				rep.Connect = append(rep.Connect, int64(d))
			}
			for _, d := range fl.firstTimes() {
				rep.First = append(rep.First, int64(d))
			}
			for _, d := range fl.finish() {
				rep.Latencies = append(rep.Latencies, int64(d))
			}
			return json.NewEncoder(out).Encode(rep)
		}
	}
	fl.close()
	return sc.Err()
}

type worker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	// from CONNECTED
	connected              int
	refused, timedOut, oth int64
}

// workers is clients spread over child processes.
type workers struct {
	ws     []*worker
	report []workerReport
	last   time.Time
}

// spawnWorkers starts ceil(n/per) workers, each connecting its share with its share of c.
// workerTLS is how workers speak TLS to the daemon: trusting caFile, or not verifying.
type workerTLS struct {
	caFile   string
	insecure bool
}

func spawnWorkers(ctx context.Context, n, c, per int, addrs, ids []string, transport string, tw *workerTLS) (*workers, error) {
	exe, err := selfExe()
	if err != nil {
		return nil, err
	}
	count := (n + per - 1) / per
	w := &workers{}
	var wg sync.WaitGroup
	errs := make([]error, count)
	for i := range count {
		share := min(per, n-i*per)
		args := []string{"bench-clients", "--addrs", strings.Join(addrs, ","), "--matches", strings.Join(ids, ","), "--transport", transport,
			"--offset", strconv.Itoa(i * per), "-n", strconv.Itoa(share), "-c", strconv.Itoa(max(1, c/count))}
		if tw != nil {
			args = append(args, "--ca", tw.caFile, "--insecure="+strconv.FormatBool(tw.insecure))
		}
		cmd := exec.CommandContext(ctx, exe, args...)
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		wk := &worker{cmd: cmd, in: in, out: bufio.NewScanner(out)}
		wk.out.Buffer(nil, 256<<20)
		w.ws = append(w.ws, wk)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !wk.out.Scan() {
				errs[i] = fmt.Errorf("bench worker %d did not report", i)
				return
			}
			_, errs[i] = fmt.Sscanf(wk.out.Text(), "CONNECTED %d %d %d %d", &wk.connected, &wk.refused, &wk.timedOut, &wk.oth)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			w.finish()
			return nil, err
		}
	}
	return w, nil
}

func (w *workers) counts() (int, int64, int64, int64) {
	var c int
	var r, t, o int64
	for _, wk := range w.ws {
		c, r, t, o = c+wk.connected, r+wk.refused, t+wk.timedOut, o+wk.oth
	}
	return c, r, t, o
}

func (w *workers) waitReceived(k int64, timeout time.Duration) bool {
	ok := true
	var last int64
	for _, wk := range w.ws {
		fmt.Fprintf(wk.in, "WAIT %d %d\n", k, int64(timeout))
	}
	for _, wk := range w.ws {
		var got bool
		var at int64
		if !wk.out.Scan() {
			return false
		}
		fmt.Sscanf(wk.out.Text(), "GOT %t %d", &got, &at)
		ok = ok && got
		last = max(last, at)
	}
	w.last = time.Unix(0, last)
	return ok
}

func (w *workers) lastArrival() time.Time { return w.last }

func (w *workers) connectTimes() []time.Duration {
	return w.durations(func(r workerReport) []int64 { return r.Connect })
}

func (w *workers) firstTimes() []time.Duration {
	return w.durations(func(r workerReport) []int64 { return r.First })
}

// durations gathers one list of nanoseconds from every worker's report.
func (w *workers) durations(of func(workerReport) []int64) []time.Duration {
	w.collect()
	var out []time.Duration
	for _, r := range w.report {
		for _, d := range of(r) {
			out = append(out, time.Duration(d))
		}
	}
	return out
}

// collect ends the workers once and keeps their reports.
func (w *workers) collect() {
	if w.report != nil {
		return
	}
	w.report = []workerReport{}
	for _, wk := range w.ws {
		io.WriteString(wk.in, "END\n")
		var r workerReport
		if wk.out.Scan() {
			json.Unmarshal(wk.out.Bytes(), &r)
		}
		wk.in.Close()
		wk.cmd.Wait()
		w.report = append(w.report, r)
	}
}

func (w *workers) finish() []time.Duration {
	return w.durations(func(r workerReport) []int64 { return r.Latencies })
}
