package store

import (
	"context"
	"testing"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestSSHMode: a build keeps the SSH mode it was started with: on failure
// before any step failed (no SSH yet) and after SSH opened.
func TestSSHMode(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		s := db.open(t)
		ctx := context.Background()
		if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		mk := func(ssh build.SSH) int64 {
			b := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}, SSH: ssh}
			if err := s.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			return b.ID
		}
		mode := func(id int64) (build.SSHMode, bool) {
			b, err := s.Build(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return b.SSH.Mode, b.SSH.Enabled
		}
		none := mk(build.SSH{})
		always := mk(build.SSH{Enabled: true, State: build.SSHPending, Mode: build.SSHAlways})
		onFailure := mk(build.SSH{Mode: build.SSHOnFailure})
		if m, on := mode(none); m != "" || on {
			t.Errorf("no SSH: %q %v", m, on)
		}
		if m, on := mode(always); m != build.SSHAlways || !on {
			t.Errorf("always: %q %v", m, on)
		}
		if m, on := mode(onFailure); m != build.SSHOnFailure || on {
			t.Errorf("on failure, before a failure: %q %v", m, on)
		}
		// A step failed: the runner opens SSH (and writes no mode).
		b, _ := s.Build(ctx, onFailure)
		b.Status, b.SSH = build.Building, build.SSH{Enabled: true, State: build.SSHPending}
		if _, err := s.UpdateBuild(ctx, b); err != nil {
			t.Fatal(err)
		}
		if m, on := mode(onFailure); m != build.SSHOnFailure || !on {
			t.Errorf("on failure, after a failure: %q %v", m, on)
		}
	})
}

// TestMigrateSSHOnFailure: builds of earlier versions started with SSH on
// failure are found by their spec; a script that mentions the field is not.
func TestMigrateSSHOnFailure(t *testing.T) {
	var onFailure, input int64
	s := migrated(t, func(old *Store) {
		ctx := context.Background()
		if err := old.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			id   *int64
			spec string
		}{{&onFailure, `{"repo":"/r","ssh_on_failure":true}`}, {&input, `{"repo":"/r","scripts":[{"script":"echo '\"ssh_on_failure\":true'"}]}`}} {
			b := &build.Build{App: "a", Status: build.Finished, Trigger: build.Manual, Steps: []build.Step{}}
			if err := old.CreateBuild(ctx, b, []byte(c.spec)); err != nil {
				t.Fatal(err)
			}
			*c.id = b.ID
		}
		if _, err := old.db.Exec(`ALTER TABLE builds DROP COLUMN ssh_on_failure`); err != nil {
			t.Fatal(err)
		}
	})
	for id, want := range map[int64]build.SSHMode{onFailure: build.SSHOnFailure, input: ""} {
		b, err := s.Build(context.Background(), id)
		if err != nil || b.SSH.Mode != want {
			t.Errorf("build %d: mode %q, %v; want %q", id, b.SSH.Mode, err, want)
		}
	}
}
