package e2e

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// goroutines reads the server's go_goroutines metric.
func goroutines(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatal("no go_goroutines in /metrics")
	return 0
}

func TestGatewayHostileClients(t *testing.T) {
	f := newSSHFixture(t, "hgssh3", "10.213.93.0/24", "10m")
	b := f.start("--workflow hold --ssh")
	f.waitSSH(b.ID)
	dir := t.TempDir()
	if r := f.hangar(fmt.Sprintf("build ssh-config %d --dir %s", b.ID, dir)); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	addr := gatewayAddr(t, dir+"/config")
	alias := fmt.Sprintf("build-%d", b.ID)
	time.Sleep(time.Second)
	base := goroutines(t, f.s.URL)

	// Each kind of hostile client is refused (the connection closes) in
	// bounded time.
	closedWithin := func(name string, c net.Conn, within time.Duration) {
		_ = c.SetReadDeadline(time.Now().Add(within))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("%s: still open after %s", name, within)
				}
				return
			}
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			junk := make([]byte, 64<<10)
			_, _ = rand.Read(junk)
			_, _ = c.Write(junk)
			closedWithin("random bytes", c, 5*time.Second)
		}()
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			// Half-open: a version line, then silence.
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			closedWithin("half-open handshake", c, 8*time.Second)
		}()
	}
	wg.Wait()

	// 200 parallel failed logins, all refused, none hanging.
	start := time.Now()
	var failed sync.WaitGroup
	var admitted, errs int
	var mu sync.Mutex
	for i := 0; i < 200; i++ {
		failed.Add(1)
		go func() {
			defer failed.Done()
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, _ := ssh.NewSignerFromKey(priv)
			c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: alias, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 20 * time.Second})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted++
				c.Close()
			} else {
				errs++
			}
		}()
	}
	failed.Wait()
	if admitted != 0 || errs != 200 {
		t.Errorf("200 wrong keys: %d admitted, %d refused", admitted, errs)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("200 failed logins took %s", d)
	}

	// The server's goroutines come back to where they were.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := goroutines(t, f.s.URL)
		if n <= base+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines: %d before, %d after", base, n)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The real user still gets in.
	if r := f.run("ssh", "-F", dir+"/config", alias, "echo still-fine"); strings.TrimSpace(r.Stdout) != "still-fine" {
		t.Errorf("after the attack: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	f.hangar(fmt.Sprintf("build cancel %d", b.ID))
	f.wait(b.ID, time.Minute)
}
