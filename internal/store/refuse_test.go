package store

import (
	"context"
	"errors"
	"testing"
)

// TestRefuseUnsupported: an app's refuse_unsupported setting is kept from
// creation, changed, listed, and reopening the store keeps it.
func TestRefuseUnsupported(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		s := db.open(t)
		ctx := context.Background()
		if err := s.CreateApp(ctx, &App{Name: "strict", Repo: "/r", RefuseUnsupported: true}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateApp(ctx, &App{Name: "lax", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		refuses := func(st *Store, name string) bool {
			t.Helper()
			a, err := st.App(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			return a.RefuseUnsupported
		}
		if !refuses(s, "strict") || refuses(s, "lax") {
			t.Fatalf("after create: strict %v, lax %v; want true, false", refuses(s, "strict"), refuses(s, "lax"))
		}
		if err := s.SetRefuseUnsupported(ctx, "strict", false); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRefuseUnsupported(ctx, "lax", true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetRefuseUnsupported(ctx, "none", true); !errors.Is(err, ErrNotFound) {
			t.Errorf("set on a missing app: %v, want ErrNotFound", err)
		}
		apps, err := s.Apps(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, a := range apps {
			got[a.Name] = a.RefuseUnsupported
		}
		if len(got) != 2 || !got["lax"] || got["strict"] {
			t.Errorf("Apps: %v, want lax true, strict false", got)
		}
		other := db.open(t)
		if refuses(other, "strict") || !refuses(other, "lax") {
			t.Errorf("another store on the same database: strict %v, lax %v; want false, true", refuses(other, "strict"), refuses(other, "lax"))
		}
	})
}
