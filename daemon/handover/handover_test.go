package handover

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPackUnpack moves 600 live TCP connections (more than two sendmsg batches) through a parcel:
// the originals are closed, the clients see no end of stream, and a line written on each
// unpacked descriptor reaches its client.
func TestPackUnpack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 600
	clients := make([]net.Conn, n)
	var want []Conn
	var servers []net.Conn
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
		rc, _ := s.(*net.TCPConn).SyscallConn()
		var fd int
		rc.Control(func(f uintptr) { fd = int(f) })
		rec := Conn{FD: fd, Match: fmt.Sprintf("m-%d", i%7), Version: 1 + i%3, Seq: uint64(i)}
		if i%50 == 0 {
			rec = Conn{FD: fd, Pending: []byte("VERSION:3:CONN\x00\xff")}
		}
		want = append(want, rec)
	}
	parcel, packed, err := Pack(want)
	if err != nil {
		t.Fatal(err)
	}
	if packed != n {
		t.Fatalf("packed %d of %d", packed, n)
	}
	for _, s := range servers {
		s.Close() // the parcel holds the sockets: no FIN
	}
	got, err := Unpack(parcel)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("unpacked %d, want %d", len(got), n)
	}
	for i := range got {
		w := want[i]
		w.FD = got[i].FD
		if !reflect.DeepEqual(got[i], w) {
			t.Fatalf("connection %d: got %+v, want %+v", i, got[i], w)
		}
		line := fmt.Sprintf("hello %d\n", i)
		if _, err := unix.Write(got[i].FD, []byte(line)); err != nil {
			t.Fatalf("write to unpacked connection %d: %v", i, err)
		}
		unix.Close(got[i].FD)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != fmt.Sprintf("hello %d\n", i) {
			t.Fatalf("client %d read %q, %v: the connection did not survive in order", i, line, err)
		}
	}
}

func TestUnpackRefusesOtherData(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("something else\n")
	if err := sendFDs(fds[0], []int{int(f.Fd())}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[0])
	f.Close()
	if _, err := Unpack(os.NewFile(uintptr(fds[1]), "p")); err == nil {
		t.Fatal("a parcel without the header was accepted")
	}
	// An empty parcel (the sender died before sending anything).
	fds, _ = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	unix.Close(fds[0])
	if _, err := Unpack(os.NewFile(uintptr(fds[1]), "p")); err == nil {
		t.Fatal("an empty parcel was accepted")
	}
}

// TestStore sends the parcel to a fake notify socket and checks the message and descriptor.
func TestStore(t *testing.T) {
	addr := t.TempDir() + "/notify"
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sock)
	if err := unix.Bind(sock, &unix.SockaddrUnix{Name: addr}); err != nil {
		t.Fatal(err)
	}
	parcel, _, err := Pack(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := (Notifier{Socket: addr}).Store(parcel); !ok || err != nil {
		t.Fatalf("Store: %v, %v", ok, err)
	}
	parcel.Close()
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "FDSTORE=1\nFDNAME=handover\nFDPOLL=0" {
		t.Fatalf("message %q", got)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	if len(msgs) != 1 {
		t.Fatal("no descriptor sent")
	}
	fds, _ := unix.ParseUnixRights(&msgs[0])
	conns, err := Unpack(os.NewFile(uintptr(fds[0]), "p"))
	if err != nil || len(conns) != 0 {
		t.Fatalf("stored parcel: %v, %v", conns, err)
	}
	if ok, err := (Notifier{}).Store(parcel); ok || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v, %v", ok, err)
	}
}
