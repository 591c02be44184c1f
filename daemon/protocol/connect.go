// Package protocol is the client wire protocol of DESIGN.md §3: reading and parsing the connect
// line, and rendering match events and status as versions 1/2 (the original sample's text frames,
// byte for byte) and 3 (ours: JSON lines with seq numbers). It does framing only: no sockets, no
// goroutines, so the daemon, the tools and the fuzzers share exactly one implementation.
package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Error codes sent to a client as `ERROR: <code> <detail>` before the server closes.
const (
	CodeNotFound           = "not_found"
	CodeBadRequest         = "bad_request"
	CodeUnsupportedVersion = "unsupported_version"
	CodeLineTooLong        = "line_too_long"
	CodeTimeout            = "timeout"
	CodeSlowConsumer       = "slow_consumer"
	CodeShutdown           = "shutdown"
	CodeRateLimited        = "rate_limited"
)

// Error is a protocol error: a code from the list above and a readable detail.
type Error struct {
	Code   string
	Detail string
}

func (e *Error) Error() string { return e.Code + " " + e.Detail }

// Frame renders the error the way the original did (`ERROR: <term>\n\r\n`), with a readable reason.
func (e *Error) Frame() []byte {
	return []byte("ERROR: " + e.Code + " " + sanitize(e.Detail) + "\n\r\n")
}

// sanitize keeps a detail on one printable line whatever the client sent.
func sanitize(s string) string {
	const max = 80
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		if r < 0x20 || r == 0x7f {
			b.WriteString("?")
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Request is a parsed connect line.
type Request struct {
	Version int    // 1, 2 or 3
	User    string // as the client named itself; informational
	Match   string // empty for V:2 (the current live match)
	From    uint64 // v3 only: resume after this seq
	HasFrom bool   // v3 only: FROM was given (no status, history then live)
}

// ParseConnect parses one connect line, with or without its line ending.
func ParseConnect(line []byte) (Request, error) {
	s := string(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")))
	bad := func(format string, a ...any) (Request, error) {
		return Request{}, &Error{Code: CodeBadRequest, Detail: fmt.Sprintf(format, a...)}
	}
	f := strings.Split(s, ":")
	switch {
	case f[0] == "V":
		if len(f) < 3 || f[1] != "2" {
			return bad("expected V:2:<user>")
		}
		if f[2] == "" {
			return bad("empty user")
		}
		return Request{Version: 2, User: f[2]}, nil
	case f[0] == "VERSION":
		if len(f) < 2 {
			return bad("expected VERSION:<n>:CONNECT:<user>:MATCH:<match-id>")
		}
		switch f[1] {
		case "1", "3":
		case "2":
			return bad("version 2 connects with V:2:<user>")
		default:
			return Request{}, &Error{Code: CodeUnsupportedVersion, Detail: "version " + f[1] + ": this server speaks 1, 2 and 3"}
		}
		if len(f) < 6 || f[2] != "CONNECT" || f[4] != "MATCH" {
			return bad("expected VERSION:%s:CONNECT:<user>:MATCH:<match-id>", f[1])
		}
		if f[3] == "" || f[5] == "" {
			return bad("empty user or match id")
		}
		r := Request{User: f[3], Match: f[5]}
		if f[1] == "1" {
			r.Version = 1 // the original ignored extra fields; so do we
			return r, nil
		}
		r.Version = 3
		switch {
		case len(f) == 6:
		case len(f) == 8 && f[6] == "FROM":
			n, err := strconv.ParseUint(f[7], 10, 64)
			if err != nil {
				return bad("FROM %q is not a sequence number", f[7])
			}
			r.From, r.HasFrom = n, true
		default:
			return bad("expected VERSION:3:CONNECT:<user>:MATCH:<match-id>[:FROM:<seq>]")
		}
		return r, nil
	default:
		return bad("expected VERSION:1:CONNECT:<user>:MATCH:<match-id>")
	}
}

// ErrLineTooLong is returned by CutLine when no newline came within the limit.
var ErrLineTooLong = errors.New("line too long")

// CutLine finds the connect line at the start of what a client has sent so far: up to and including
// the first '\n', at most max bytes. ok is false while more bytes are needed. Whatever follows the
// line is ignored, as the original ignored anything a client sent after connecting.
func CutLine(buf []byte, max int) (line []byte, ok bool, err error) {
	i := bytes.IndexByte(buf, '\n')
	switch {
	case i >= 0 && i+1 <= max:
		return buf[:i+1], true, nil
	case i >= 0 || len(buf) > max:
		return nil, false, ErrLineTooLong
	}
	return nil, false, nil
}

// ErrorFor maps a ReadLine/parse error to the protocol error a client is sent.
func ErrorFor(err error, max int) *Error {
	var pe *Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, ErrLineTooLong):
		return &Error{Code: CodeLineTooLong, Detail: fmt.Sprintf("connect line over %d bytes", max)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Code: CodeTimeout, Detail: "no connect line in time"}
	default:
		return &Error{Code: CodeBadRequest, Detail: err.Error()}
	}
}
