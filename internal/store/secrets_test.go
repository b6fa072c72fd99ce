package store

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// TestGroups: app and global groups, their keys listed without values, a
// build's lookup preferring the app's group, deletes, and cascade with the
// app.
func TestGroups(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		for _, name := range []string{"a", "b"} {
			if err := s.CreateApp(ctx, &App{Name: name, Repo: "/r"}); err != nil {
				t.Fatal(err)
			}
		}
		set := func(app, group string, kv ...string) {
			t.Helper()
			var vars []SealedVar
			for i := 0; i < len(kv); i += 2 {
				vars = append(vars, SealedVar{Name: kv[i], Sealed: []byte(kv[i+1])})
			}
			if err := s.SetGroupVars(ctx, app, group, vars); err != nil {
				t.Fatalf("set %s/%s: %v", app, group, err)
			}
		}
		set("a", "play", "TOKEN", "sealed-1", "USER", "sealed-2")
		set("a", "play", "TOKEN", "sealed-3") // replaces
		set("", "play", "TOKEN", "global-1")
		set("", "shared", "URL", "global-2")
		set("b", "other", "X", "x")
		if err := s.SetGroupVars(ctx, "nope", "g", nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("set on a missing app: %v", err)
		}

		groups, err := s.Groups(ctx, "a")
		if err != nil || len(groups) != 1 || groups[0].Name != "play" || !slices.Equal(groups[0].Keys, []string{"TOKEN", "USER"}) || groups[0].Vars != nil {
			t.Fatalf("groups of a: %+v, %v", groups, err)
		}
		global, err := s.Groups(ctx, "")
		if err != nil || len(global) != 2 || global[0].Name != "play" || global[1].Name != "shared" {
			t.Fatalf("global groups: %+v, %v", global, err)
		}

		g, err := s.GroupValues(ctx, "a", "play")
		if err != nil || g.App != "a" || len(g.Vars) != 2 || string(g.Vars[0].Sealed) != "sealed-3" || string(g.Vars[1].Sealed) != "sealed-2" {
			t.Fatalf("a's play: %+v, %v", g, err)
		}
		g, err = s.GroupValues(ctx, "b", "play") // b has none: the global one
		if err != nil || g.App != "" || len(g.Vars) != 1 || string(g.Vars[0].Sealed) != "global-1" {
			t.Fatalf("b's play: %+v, %v", g, err)
		}
		if _, err := s.GroupValues(ctx, "b", "missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing group: %v", err)
		}
		if _, err := s.GroupValues(ctx, "a", "other"); !errors.Is(err, ErrNotFound) {
			t.Errorf("another app's group: %v", err)
		}

		if err := s.DeleteGroupVar(ctx, "a", "play", "USER"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteGroupVar(ctx, "a", "play", "USER"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete again: %v", err)
		}
		if err := s.DeleteGroup(ctx, "a", "play"); err != nil {
			t.Fatal(err)
		}
		if g, err := s.GroupValues(ctx, "a", "play"); err != nil || g.App != "" {
			t.Errorf("after deleting a's play, the global one: %+v, %v", g, err)
		}
		if err := s.DeleteGroup(ctx, "a", "play"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete a missing group: %v", err)
		}
		if err := s.DeleteApp(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateApp(ctx, &App{Name: "b", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		if groups, err := s.Groups(ctx, "b"); err != nil || len(groups) != 0 {
			t.Errorf("groups of a re-created app: %+v, %v", groups, err)
		}
	})
}

func TestKeystores(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutKeystore(ctx, &Keystore{App: "a", Ref: "release", Alias: "key0", Sealed: []byte("one")}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutKeystore(ctx, &Keystore{App: "a", Ref: "release", Alias: "key1", Sealed: []byte("two")}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutKeystore(ctx, &Keystore{App: "nope", Ref: "x", Sealed: []byte("x")}); !errors.Is(err, ErrNotFound) {
			t.Errorf("keystore of a missing app: %v", err)
		}
		list, err := s.Keystores(ctx, "a")
		if err != nil || len(list) != 1 || list[0].Ref != "release" || list[0].Alias != "key1" || list[0].Sealed != nil {
			t.Fatalf("keystores: %+v, %v", list, err)
		}
		k, err := s.Keystore(ctx, "a", "release")
		if err != nil || string(k.Sealed) != "two" {
			t.Fatalf("keystore: %+v, %v", k, err)
		}
		if _, err := s.Keystore(ctx, "a", "other"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing keystore: %v", err)
		}
		if err := s.DeleteKeystore(ctx, "a", "release"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteKeystore(ctx, "a", "release"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete again: %v", err)
		}
	})
}
