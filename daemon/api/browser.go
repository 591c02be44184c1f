package api

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"net"
	"path"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"matchstream/daemon/live"
	"matchstream/daemon/protocol"
)

// The live match page: plain files, embedded, no build step.
//
//go:embed web
var web embed.FS

// AttachSSE hands a Server-Sent Events connection (fd, the handler's own descriptor) to the
// stream layer, which serves it from the match's hub like a TCP client; see stream.AttachSSE.
type AttachSSE func(fd int, match string, after uint64, resume bool, head []byte) error

// sseHead is the response head of an event stream. It is written by the stream layer as the first
// frame, so nothing can come between it and the events. No length and no chunking: the body is
// the stream, and it ends when the connection closes (HTTP/1.1 allows this with Connection: close).
// retry: tells the browser to reconnect after 2 s (its default is about 3).
func sseHead() []byte {
	return []byte("HTTP/1.1 200 OK\r\n" +
		"Content-Type: text/event-stream; charset=utf-8\r\n" +
		"Cache-Control: no-cache\r\n" +
		"Access-Control-Allow-Origin: *\r\n" +
		"Match-Stream-API-Version: " + Version + "\r\n" +
		"X-Accel-Buffering: no\r\n" + // nginx: do not buffer the stream
		"Connection: close\r\n\r\n" +
		"retry: 2000\n\n")
}

// sse serves GET /matches/{id}/stream: the status, then each event, as Server-Sent Events. A
// browser that reconnects sends Last-Event-ID (the seq of the last event it got) and gets exactly
// what it missed; ?last_event_id= does the same for clients that cannot set the header.
func (h *Handler) sse(ctx *fasthttp.RequestCtx, id string) {
	st, ok := h.reg.State(id)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "match "+id+" not found")
		return
	}
	if h.Streams == nil {
		writeError(ctx, fasthttp.StatusServiceUnavailable, "event streams are not served by this daemon")
		return
	}
	last := ctx.Request.Header.Peek("Last-Event-ID")
	if len(last) == 0 {
		last = ctx.QueryArgs().Peek("last_event_id")
	}
	after, err := strconv.ParseUint(string(last), 10, 64)
	resume := len(last) > 0 && err == nil
	if resume && st.Ended() && after >= st.Seq {
		// Over, and it has everything: 204 is how a server tells EventSource to stop reconnecting.
		ctx.SetStatusCode(fasthttp.StatusNoContent)
		return
	}
	if ctx.IsHead() {
		ctx.SetContentType("text/event-stream; charset=utf-8")
		return
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		// fasthttp closes c when this returns; the stream layer keeps a descriptor of its own.
		if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
			c = u.UnsafeConn()
		}
		if tc, ok := c.(*tls.Conn); ok {
			h.sseOverTLS(tc, id, after, resume)
			return
		}
		fd, err := dupConn(c)
		if err != nil {
			h.log.Warn("event stream: taking over the connection", "match", id, "err", err)
			return
		}
		if err := h.Streams(fd, id, after, resume, sseHead()); err != nil {
			h.log.Debug("event stream refused", "match", id, "err", err)
		}
	})
}

// sseOverTLS serves an event stream on an HTTPS connection from the match's hub, on this (the
// hijacking) goroutine, which waits for the client to leave: crypto/tls's record state cannot be
// moved into the stream layer's pollers as a TLS stream port's is, so an HTTPS event stream costs
// a goroutine and crypto/tls's buffers. Browsers at scale are best served behind a TLS-terminating
// proxy on this host, whose plain streams the stream layer holds for a few hundred bytes each.
func (h *Handler) sseOverTLS(c *tls.Conn, id string, after uint64, resume bool) {
	ctx, cancel := context.WithTimeout(h.life, 5*time.Second)
	sub, err := h.reg.SubscribeRestoring(ctx, c, id, protocol.VersionSSE,
		live.Join{Head: sseHead(), Resume: resume, After: after, StatusPastEnd: true})
	cancel()
	if err != nil {
		if errors.Is(err, live.ErrHandingOver) {
			c.Write(sseHead()) // reconnect (to the successor) in 2 s
		}
		h.log.Debug("event stream refused", "match", id, "err", err)
		return
	}
	if ev := h.lns.Events; ev != nil { // counted with the API port's other event streams
		ev.Conns.Add(1)
		defer ev.Conns.Add(-1)
	}
	// Whatever the browser sends is ignored; the read ends when it goes away or the hub closes c.
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	sub.Leave()
}

// dupConn returns a close-on-exec duplicate of a connection's descriptor (through Control: Fd()
// would switch the shared socket to blocking mode).
func dupConn(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, unix.ENOTSOCK
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// Long-poll timeouts: the default suits proxies that cut idle requests at 30 s or more.
const (
	pollDefault = 25 * time.Second
	pollMax     = 60 * time.Second
)

// poll serves GET /matches/{id}/poll?after=<seq>&timeout=<s> (from= is the same as after=): at once if there are events after
// seq (or the match is over), else as soon as the next arrives, or after timeout with none.
func (h *Handler) poll(ctx *fasthttp.RequestCtx, id string) {
	args := ctx.QueryArgs()
	// from, as on /events, is taken for after: ignoring it would answer with the whole match.
	after, ok := h.position(ctx, id, "after", "from")
	if !ok {
		return
	}
	wait := pollDefault
	if v := args.Peek("timeout"); len(v) > 0 {
		s, err := strconv.ParseFloat(string(v), 64)
		if err != nil || s < 0 {
			writeError(ctx, fasthttp.StatusBadRequest, "timeout must be a number of seconds")
			return
		}
		wait = min(time.Duration(s*float64(time.Second)), pollMax)
	}
	c, cancel := context.WithTimeout(h.life, wait)
	defer cancel()
	p, ok := h.reg.Wait(c, id, after)
	if !ok {
		writeError(ctx, fasthttp.StatusNotFound, "match "+id+" not found")
		return
	}
	ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(ctx, fasthttp.StatusOK, Poll{Seq: p.Seq, Ended: p.Ended, Events: p.Events})
}

// page serves the live match page's files; "/" is index.html.
func (h *Handler) page(ctx *fasthttp.RequestCtx, p string) bool {
	if p == "/" {
		p = "/index.html"
	}
	b, err := web.ReadFile("web" + p)
	if err != nil {
		return false
	}
	types := map[string]string{".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	ctx.SetContentType(types[path.Ext(p)])
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.SetBody(b)
	return true
}

// preflight answers a CORS preflight: any origin may read the API and follow event streams (a
// reconnecting EventSource sends Last-Event-ID, which needs one); posting still needs the token.
func preflight(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
	ctx.Response.Header.Set("Access-Control-Allow-Headers", "Last-Event-ID, Authorization, Content-Type")
	ctx.Response.Header.Set("Access-Control-Max-Age", "86400")
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}
