// Package netx holds the accept loop that Hangar's servers (the builder
// link, the gateway, the builder's SSH server) share.
package netx

import (
	"errors"
	"net"
	"time"
)

// Accept accepts connections on l and passes each to handle, backing off
// on temporary errors, until l fails. It then returns closedErr if closed()
// reports the server closed, else the error.
func Accept(l net.Listener, closed func() bool, closedErr error, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if closed() {
				return closedErr
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		handle(nc)
	}
}
