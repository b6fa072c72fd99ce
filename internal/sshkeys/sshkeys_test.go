package sshkeys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func newSealer(t *testing.T) *sshca.Sealer {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := sshca.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func same(a, b *Keys) bool {
	return bytes.Equal(a.UserCA.PublicKey().Marshal(), b.UserCA.PublicKey().Marshal()) &&
		bytes.Equal(a.HostCA.PublicKey().Marshal(), b.HostCA.PublicKey().Marshal()) &&
		bytes.Equal(a.URLKey, b.URLKey) && bytes.Equal(a.hostCAPEM, b.hostCAPEM)
}

// TestShared: servers of one database starting together (each its own
// Store, as processes) get the same keys, those of the one server that
// had files; what one server seals, another opens; a gateway reads them;
// a process with another secrets key is refused, saying why; a gateway
// before any server is told to start one.
func TestShared(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	secrets := newSealer(t)

	gw := openStore(t, url)
	if _, _, err := GatewayCAs(ctx, gw, secrets); err == nil || !strings.Contains(err.Error(), "start a hangar server") {
		t.Fatalf("a gateway before any server: %v", err)
	}

	// One server has keys of its own from before: they become the shared ones.
	seeded := t.TempDir()
	own, err := FromFiles(seeded)
	if err != nil {
		t.Fatal(err)
	}
	first, err := Shared(ctx, openStore(t, url), secrets, true, seeded)
	if err != nil {
		t.Fatal(err)
	}
	if !same(first, own) {
		t.Fatal("the first server's own keys did not become the shared ones")
	}

	var wg sync.WaitGroup
	got := make([]*Keys, 6)
	errs := make([]error, 6)
	for i := range got {
		st := openStore(t, url)
		dir := t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = Shared(ctx, st, secrets, true, dir)
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("server %d: %v", i, errs[i])
		}
		if !same(got[i], first) {
			t.Fatalf("server %d has other keys than the first", i)
		}
	}
	sealed := got[0].Sealer.Seal([]byte("build key"), "build-1")
	if plain, err := got[1].Sealer.Open(sealed, "build-1"); err != nil || string(plain) != "build key" {
		t.Fatalf("one server's sealed build key does not open on another: %v", err)
	}
	// A certificate of one server's user CA verifies against another's.
	cred, err := got[2].UserCA.Issue("build-1", timeIn(t))
	if err != nil {
		t.Fatal(err)
	}
	chk := sshca.Checker{CA: got[3].UserCA.PublicKey(), Principal: "build-1", Key: cred.PublicKey}
	if err := chk.Check(cred.Certificate); err != nil {
		t.Fatalf("certificate of one server, checked with another's CA: %v", err)
	}

	hostCA, userCA, err := GatewayCAs(ctx, gw, secrets)
	if err != nil || !bytes.Equal(hostCA.PublicKey().Marshal(), first.HostCA.PublicKey().Marshal()) ||
		!bytes.Equal(userCA.Marshal(), first.UserCA.PublicKey().Marshal()) {
		t.Fatalf("a gateway's CAs: %v (or not the servers')", err)
	}
	if g, err := Shared(ctx, gw, secrets, false, ""); err != nil || !same(g, first) {
		t.Fatalf("the keys read without creating: %v", err)
	}
	if _, err := Shared(ctx, gw, newSealer(t), true, t.TempDir()); !errors.Is(err, ErrOtherSecretsKey) {
		t.Fatalf("another secrets key: %v, want ErrOtherSecretsKey", err)
	}

	// The gateway files mirror the shared keys.
	dir := filepath.Join(t.TempDir(), "ssh")
	if err := first.WriteGatewayFiles(dir); err != nil {
		t.Fatal(err)
	}
	hc, err := sshca.LoadHostCA(filepath.Join(dir, "host_ca"))
	if err != nil || !bytes.Equal(hc.PublicKey().Marshal(), first.HostCA.PublicKey().Marshal()) {
		t.Fatalf("host_ca file: %v", err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if k, _, _, _, err := ssh.ParseAuthorizedKey(pub); err != nil || !bytes.Equal(k.Marshal(), first.UserCA.PublicKey().Marshal()) {
		t.Fatalf("user_ca.pub file: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "host_ca")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host_ca mode: %v %v", fi.Mode(), err)
	}
}

func timeIn(t *testing.T) time.Time {
	t.Helper()
	return time.Now().Add(time.Hour)
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
