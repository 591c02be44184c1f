package installer_test

import "net"

// netListen holds a port the way another program would: without SO_REUSEPORT.
func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
