package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"math"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/link"
)

// BenchmarkOutputOverLink sends the log benchmark's verbose step (1,000,000
// lines, about 18 MB, written in 4 KiB blocks as sed does) from an outbox
// over a real link (SSH on loopback) to a runner's end that reads every
// event: the builder's and the link's share of a verbose step's cost.
func BenchmarkOutputOverLink(b *testing.B) {
	var data []byte
	for i := 1; i <= 1000000; i++ {
		data = fmt.Appendf(data, "line number %d\n", i)
	}
	for _, bc := range []struct {
		name        string
		minCompress int
	}{{"s2", minCompress}, {"raw", math.MaxInt}} {
		b.Run(bc.name, func(b *testing.B) {
			client, conn := benchLink(b)
			b.SetBytes(int64(len(data)))
			cpu0 := cpuTime()
			for b.Loop() {
				box := newOutbox(client.Send, 0)
				box.minCompress = bc.minCompress
				got := make(chan int64)
				go func() {
					var n int64
					for n < int64(len(data)) {
						ev, err := conn.Recv()
						if err != nil {
							b.Error(err)
							break
						}
						n += int64(len(ev.Data) + ev.Size)
					}
					got <- n
				}()
				var mark int64
				for rest := data; len(rest) > 0; {
					k := min(len(rest), 4096)
					mark = box.add(1, rest[:k])
					rest = rest[k:]
				}
				if !box.flushed(mark) {
					b.Fatal("link failed")
				}
				if n := <-got; n != int64(len(data)) {
					b.Fatalf("received %d of %d bytes", n, len(data))
				}
			}
			// Wall time says little on a busy machine; CPU time does.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// benchLink opens a link on loopback: the builder's end and the runner's.
func benchLink(b *testing.B) (*link.Client, *link.Conn) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	userPub, _ := ssh.NewPublicKey(pub)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		b.Fatal(err)
	}
	s := &link.Server{HostKey: hostSigner}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	b.Cleanup(func() { s.Close() })
	exp, err := s.Expect("build-1", userPub)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(exp.Close)
	c, err := link.Dial(context.Background(), &link.Hello{Name: "build-1", Addr: l.Addr().String(),
		HostKey: string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey())), Key: string(pem.EncodeToMemory(block))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, <-exp.Conn()
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
