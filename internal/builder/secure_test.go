package builder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/link"
	"github.com/hangar-ci/hangar/internal/mask"
)

const secret = "tok-SECRET-1"

// TestStepOutputMasksSplitValue: a value that reaches the reader in two
// reads is hidden all the same; what is held back comes at the step's end.
func TestStepOutputMasksSplitValue(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	out, err := newStepOutput(box, 1, mask.NewSet([]string{secret}).Stream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.w.WriteString("before tok-"); err != nil {
		t.Fatal(err)
	}
	// The first part has been read (and its start held back) before the
	// rest is written.
	rec.waitOutput(t, 1, "before ")
	if got := rec.output(1); got != "before " {
		t.Fatalf("after the first part: %q", got)
	}
	out.w.WriteString("SECRET-1 after; ends with tok-SEC")
	if !out.finish() {
		t.Fatal("finish failed")
	}
	if got, want := rec.output(1), "before ***** after; ends with tok-SEC"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

// TestStepOutputMasksScript: a script echoing the value, and printing it
// in two writes, shows it masked.
func TestStepOutputMasksScript(t *testing.T) {
	rec := newRecorder()
	box := newOutbox(rec.send, 0)
	out, err := newStepOutput(box, 1, mask.NewSet([]string{secret}).Stream())
	if err != nil {
		t.Fatal(err)
	}
	cmd := (&run{}).command(context.Background(), out.w, t.TempDir(), []string{"V=" + secret}, "bash", "-c", `echo "value: $V"; printf 'tok-'; printf 'SECRET-1\n'; echo "${V:0:4}"`)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	out.finish()
	if got, want := rec.output(1), "value: *****\n*****\ntok-\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

// TestKeystoresAndSecureRun: the job's keystore is written 0600 under the
// home with Codemagic's variables, group variables come after them, and a
// step's error is reported masked.
func TestKeystoresAndSecureRun(t *testing.T) {
	home := t.TempDir()
	rec := newRecorder()
	ks := []byte("\xfe\xed\xfe\xed not really a keystore")
	job := &link.Job{
		Env:       []string{"GROUP_TOKEN=" + secret, "CM_KEY_ALIAS=overridden-by-a-group"},
		Vars:      []string{"DERIVED=x${GROUP_TOKEN}y"},
		Secure:    []string{secret, "store-PASS", "key-PASS"},
		Keystores: []link.Keystore{{Ref: "release", File: ks, Password: "store-PASS", Alias: "upload", KeyPassword: "key-PASS"}},
	}
	r, err := newRun(Config{Home: home}, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.send, r.out = rec.send, newOutbox(rec.send, 0)
	path := filepath.Join(home, ".hangar", "keystores", "release.keystore")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore file: %v, %v", fi, err)
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, ks) {
		t.Error("keystore file differs")
	}
	for name, want := range map[string]string{"CM_KEYSTORE_PATH": path, "CM_KEYSTORE_PASSWORD": "store-PASS", "CM_KEY_PASSWORD": "key-PASS",
		"CM_KEY_ALIAS": "overridden-by-a-group", "GROUP_TOKEN": secret, "DERIVED": "x" + secret + "y"} {
		if got, _ := lookupEnv(r.env, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	err = r.step(context.Background(), 1, func(ctx context.Context, out io.Writer) error {
		cmd := r.command(ctx, out, home, r.env, "bash", "-c", `echo "$CM_KEYSTORE_PASSWORD $CM_KEY_PASSWORD $DERIVED $(wc -c < "$CM_KEYSTORE_PATH")"`)
		if err := cmd.Run(); err != nil {
			return err
		}
		return errors.New("deploy refused token " + secret)
	})
	if err == nil {
		t.Fatal("the step did not fail")
	}
	if got, want := rec.output(1), "***** ***** x*****y "+strconv.Itoa(len(ks))+"\nhangar: deploy refused token *****\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	i := slices.IndexFunc(rec.events, func(ev link.Event) bool { return ev.Type == link.StepEnd })
	if i < 0 || strings.Contains(rec.events[i].Error, secret) || !strings.Contains(rec.events[i].Error, "*****") {
		t.Errorf("step end: %+v", rec.events)
	}
}
