package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestSharedKey: of several processes (Stores) asking for one shared key
// at once, each with its own candidate, all get the same one, and later
// callers get it too; another name is another key.
func TestSharedKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		a, b := twoStores(t, db)
		var wg sync.WaitGroup
		got := make([][]byte, 8)
		errs := make([]error, 8)
		for i := range got {
			st := a
			if i%2 == 1 {
				st = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = st.SharedKey(ctx, "user_ca", []byte(fmt.Sprintf("candidate-%d", i)))
			}()
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if !bytes.Equal(got[i], got[0]) || !bytes.HasPrefix(got[0], []byte("candidate-")) {
				t.Fatalf("caller %d got %q, caller 0 %q", i, got[i], got[0])
			}
		}
		if later, err := a.SharedKey(ctx, "user_ca", []byte("late")); err != nil || !bytes.Equal(later, got[0]) {
			t.Fatalf("a later caller got %q, %v; want %q", later, err, got[0])
		}
		if _, err := a.SharedKey(ctx, "url.key", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("reading a key no one stored: %v, want ErrNotFound", err)
		}
		if other, err := b.SharedKey(ctx, "host_ca", []byte("host")); err != nil || string(other) != "host" {
			t.Fatalf("another name: %q, %v", other, err)
		}
	})
}
