package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/sshca"
	"github.com/hangar-ci/hangar/internal/store"
)

func newVault(t *testing.T) (*Vault, *store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sealer, _, err := LoadSealer("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"a", "b"} {
		if err := st.CreateApp(context.Background(), &store.App{Name: app, Repo: "/r"}); err != nil {
			t.Fatal(err)
		}
	}
	return &Vault{Store: st, Sealer: sealer}, st, dir
}

// TestResolve: values are sealed at rest (the database file never holds
// them), groups come in the order named, the app's group shadows a global
// one, keystores open with their passwords, and every secret is listed
// to mask.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	v, st, dir := newVault(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.SetGroup(ctx, "a", "play", []Var{{"TOKEN", "tok-SECRET-1"}, {"SHARED", "from-play"}}))
	must(v.SetGroup(ctx, "", "common", []Var{{"SHARED", "from-common"}, {"URL", "https://example.invalid"}}))
	must(v.SetGroup(ctx, "", "play", []Var{{"TOKEN", "global-token"}}))
	ks := &Keystore{File: []byte("\xfe\xed\xfe\xed keystore bytes"), Password: "store-PASS-9", Alias: "upload", KeyPassword: "key-PASS-7"}
	must(v.PutKeystore(ctx, "a", "release", ks))

	r, err := v.Resolve(ctx, "a", []string{"play", "common"}, []string{"release"})
	must(err)
	if want := []string{"SHARED=from-play", "TOKEN=tok-SECRET-1", "SHARED=from-common", "URL=https://example.invalid"}; !slices.Equal(r.Env, want) {
		t.Errorf("env %q, want %q", r.Env, want)
	}
	for _, s := range []string{"tok-SECRET-1", "from-play", "from-common", "store-PASS-9", "key-PASS-7"} {
		if !slices.Contains(r.Secure, s) {
			t.Errorf("secure values lack %q", s)
		}
	}
	if len(r.Keystores) != 1 || !bytes.Equal(r.Keystores[0].File, ks.File) || r.Keystores[0].Alias != "upload" {
		t.Errorf("keystores: %+v", r.Keystores)
	}
	r, err = v.Resolve(ctx, "b", []string{"play"}, nil)
	must(err)
	if !slices.Equal(r.Env, []string{"TOKEN=global-token"}) {
		t.Errorf("b gets %q", r.Env)
	}

	// At rest: no value in the database file (WAL included).
	st.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "hangar.db*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, s := range []string{"tok-SECRET-1", "store-PASS-9", "keystore bytes"} {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds %q in clear", f, s)
			}
		}
	}
}

func TestMissingAndWrongKey(t *testing.T) {
	ctx := context.Background()
	v, _, _ := newVault(t)
	if err := v.SetGroup(ctx, "a", "play", []Var{{"TOKEN", "t0ps3cret"}}); err != nil {
		t.Fatal(err)
	}
	var me *MissingError
	err := v.Check(ctx, "a", []string{"play", "nope"}, nil)
	if !errors.As(err, &me) || me.Name != "nope" || !strings.Contains(err.Error(), "hangar group set a nope KEY=VALUE") {
		t.Errorf("missing group: %v", err)
	}
	err = v.Check(ctx, "a", nil, []string{"release"})
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "hangar app keystore add a release") {
		t.Errorf("missing keystore: %v", err)
	}
	if _, err := v.Resolve(ctx, "b", []string{"play"}, nil); !errors.As(err, &me) {
		t.Errorf("another app's group: %v", err)
	}

	// Another server with another key cannot open the value, and says so
	// without it.
	key := make([]byte, 32)
	rand.Read(key)
	other, _ := sshca.NewSealer(key)
	v2 := &Vault{Store: v.Store, Sealer: other}
	_, err = v2.Resolve(ctx, "a", []string{"play"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--secrets-key") || strings.Contains(err.Error(), "t0ps3cret") {
		t.Errorf("wrong key: %v", err)
	}
}

func TestSetRefusals(t *testing.T) {
	ctx := context.Background()
	v, _, _ := newVault(t)
	for _, tc := range []struct {
		group string
		vars  []Var
		want  string
	}{
		{"bad name", []Var{{"A", "1"}}, "group name"},
		{"g", []Var{{"1A", "hunter2"}}, "variable name"},
		{"g", []Var{{"A", "x\x00y"}}, "NUL"},
		{"g", []Var{{"A", strings.Repeat("x", MaxValueBytes+1)}}, "more than"},
		{"g", nil, "no variables"},
	} {
		err := v.SetGroup(ctx, "a", tc.group, tc.vars)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("set %s %v: %v", tc.group, tc.vars, err)
		}
	}
	if err := v.SetGroup(ctx, "nope", "g", []Var{{"A", "1"}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing app: %v", err)
	}
	if err := v.PutKeystore(ctx, "a", "r", &Keystore{File: []byte("x"), Password: "p"}); err == nil || !strings.Contains(err.Error(), "key alias") {
		t.Errorf("keystore without alias: %v", err)
	}
}

func TestLoadSealer(t *testing.T) {
	dir := t.TempDir()
	_, fp1, err := LoadSealer("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	_, fp2, _ := LoadSealer("", dir)
	if fp1 != fp2 {
		t.Error("the data directory's key changed")
	}
	key := make([]byte, 32)
	rand.Read(key)
	b64 := base64.StdEncoding.EncodeToString(key)
	file := filepath.Join(dir, "shared.key")
	os.WriteFile(file, []byte(b64+"\n"), 0o600)
	t.Setenv("HANGAR_TEST_KEY", b64)
	_, fpFile, err := LoadSealer(file, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, fpEnv, err := LoadSealer("env:HANGAR_TEST_KEY", dir)
	if err != nil || fpEnv != fpFile {
		t.Errorf("env key: %v, %s vs %s", err, fpEnv, fpFile)
	}
	os.WriteFile(file, []byte("short"), 0o600)
	if _, _, err := LoadSealer(file, dir); err == nil || !strings.Contains(err.Error(), "openssl rand -base64 32") {
		t.Errorf("short key: %v", err)
	}
	if _, _, err := LoadSealer("env:HANGAR_TEST_UNSET_KEY", dir); err == nil || !strings.Contains(err.Error(), "not set") {
		t.Errorf("unset env: %v", err)
	}
}

func TestParseDotenv(t *testing.T) {
	src := "# comment\n\nexport A=1\nB = two words # note\nC=\"line1\\nline2 \\\"q\\\"\"\nD='it''s'\nE='multi\nline'\nF=\n"
	vars, err := ParseDotenv(strings.ReplaceAll(src, "D='it''s'", "D='raw \\n'"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Var{{"A", "1"}, {"B", "two words"}, {"C", "line1\nline2 \"q\""}, {"D", `raw \n`}, {"E", "multi\nline"}, {"F", ""}}
	if !slices.Equal(vars, want) {
		t.Errorf("got %q\nwant %q", vars, want)
	}
	for _, bad := range []string{"NOEQUALS", "A=\"open", "1A=x", "A=\"x\" y"} {
		if _, err := ParseDotenv(bad); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
