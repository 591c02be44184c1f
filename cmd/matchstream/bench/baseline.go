package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNoBaselines refuses --baseline in a binary built without them, and says how to get one.
var ErrNoBaselines = errors.New("this matchstream was built without the bench baselines: `make bench-binary` builds bin/matchstream-bench with them (go build -tags baselines)")

// baselineProc is a running baseline server.
type baselineProc struct {
	mu    sync.Mutex
	kind  string
	pid   int
	addrs []string
	in    io.WriteCloser
	out   *bufio.Scanner
	wait  func() error
}

func (b *baselineProc) event(group string) error {
	b.mu.Lock() // the mixed load posts from several goroutines; the control pipe takes one at a time
	defer b.mu.Unlock()
	if _, err := io.WriteString(b.in, strings.TrimSpace("EVENT "+group)+"\n"); err != nil {
		return err
	}
	if !b.out.Scan() {
		return fmt.Errorf("baseline %s: no answer", b.kind)
	}
	return nil
}

// waitAccepted waits until the server has accepted n connections (they may sit in its backlog
// after the clients' connect returned).
func (b *baselineProc) waitAccepted(n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := io.WriteString(b.in, "COUNT\n"); err != nil {
			return err
		}
		if !b.out.Scan() {
			return fmt.Errorf("baseline %s: no answer", b.kind)
		}
		if got, _ := strconv.Atoi(strings.TrimPrefix(b.out.Text(), "COUNT ")); got >= n {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("baseline %s: fewer than %d connections accepted in 30s", b.kind, n)
}

func (b *baselineProc) stop() {
	b.in.Close()
	b.wait()
}

// selfExe is the running binary, used to start daemons and baselines.
func selfExe() (string, error) { return os.Executable() }
