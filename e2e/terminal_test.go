package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestTerminalRelay drives the browser terminal's WebSocket the way the web
// UI does: a login shell on the machine, through the gateway; closing the
// socket only detaches it (the next terminal gets it back with its screen);
// exit is a logout.
func TestTerminalRelay(t *testing.T) {
	f := newSSHFixture(t, "hgssh4", "10.213.90.0/24", "10m")
	b := f.start("--workflow quick --ssh")
	f.waitSSH(b.ID)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	term := openTerminal(t, ctx, f, b.ID)
	send, waitFor := term.send, term.waitFor
	send(map[string]any{"type": "resize", "cols": 100, "rows": 30})
	waitFor("builder@build-")
	send(map[string]any{"type": "input", "data": "echo cols=$(tput cols) dir=$FCI_BUILD_DIR\r"})
	waitFor("cols=100 dir=/home/builder/clone")
	if nb := f.show(b.ID); nb.SSH.State != build.SSHConnected || len(nb.SSH.Sessions) != 1 || !strings.Contains(nb.SSH.Sessions[0].Client, "browser") {
		t.Errorf("while connected: %+v", nb.SSH)
	}
	send(map[string]any{"type": "input", "data": "export KEPT=v42; echo mark-$((6*7))\r"})
	waitFor("mark-42")
	term.close() // a closed tab
	waitEvent(t, f, b.ID, "ssh_login_detach", "shell 1")
	if nb := f.show(b.ID); nb.Status.Done() || nb.SSH.State == build.SSHClosed {
		t.Fatalf("closing the socket ended the build: %s %+v", nb.Status, nb.SSH)
	}
	again := openTerminal(t, ctx, f, b.ID)
	again.waitFor("mark-42") // the screen, restored
	again.send(map[string]any{"type": "input", "data": "echo kept=$KEPT\r"})
	again.waitFor("kept=v42")
	again.send(map[string]any{"type": "input", "data": "exit\r"})
	nb, _ := f.wait(b.ID, 30*time.Second)
	if nb.Status != build.Finished || !strings.Contains(nb.SSH.ClosedReason, "logged out") {
		t.Errorf("after exit: %s %+v", nb.Status, nb.SSH)
	}
}

// terminal is a browser terminal's WebSocket, driven like the web UI does.
type terminal struct {
	send    func(map[string]any)
	waitFor func(string)
	close   func()
}

func openTerminal(t *testing.T, ctx context.Context, f *sshFixture, id int64) *terminal {
	t.Helper()
	tk, err := f.s.Client().TerminalTicket(ctx, id)
	if err != nil || tk.URL == "" {
		t.Fatalf("ticket: %+v %v", tk, err)
	}
	wsURL := "ws" + strings.TrimPrefix(f.s.URL, "http") + tk.URL
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	// A ticket opens one terminal only.
	if ws2, _, err := websocket.Dial(ctx, wsURL, nil); err == nil {
		ws2.CloseNow()
		t.Error("a terminal ticket was used twice")
	}
	var screen strings.Builder
	return &terminal{
		close: func() { _ = ws.Close(websocket.StatusGoingAway, "tab closed") },
		send: func(m map[string]any) {
			data, _ := json.Marshal(m)
			if err := ws.Write(ctx, websocket.MessageText, data); err != nil {
				t.Fatal(err)
			}
		},
		waitFor: func(want string) {
			t.Helper()
			for !strings.Contains(screen.String(), want) {
				_, data, err := ws.Read(ctx)
				if err != nil {
					t.Fatalf("waiting for %q: %v\nscreen:\n%s", want, err, screen.String())
				}
				screen.Write(data)
			}
		},
	}
}

// TestTerminalLogout: the terminal's close button ("logout") ends the shell:
// a logout, though the shell was busy.
func TestTerminalLogout(t *testing.T) {
	f := newSSHFixture(t, "hgssh6", "10.213.89.0/24", "10m")
	b := f.start("--workflow quick --ssh")
	f.waitSSH(b.ID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	term := openTerminal(t, ctx, f, b.ID)
	term.waitFor("builder@build-")
	term.send(map[string]any{"type": "input", "data": "sleep 600\r"})
	term.send(map[string]any{"type": "logout"})
	nb, _ := f.wait(b.ID, 30*time.Second)
	if nb.Status != build.Finished || !strings.Contains(nb.SSH.ClosedReason, "logged out") {
		t.Errorf("after logout: %s %+v", nb.Status, nb.SSH)
	}
}

// TestSSHNotice: a login session is told when the steps are done and how
// long the machine stays.
func TestSSHNotice(t *testing.T) {
	f := newSSHFixture(t, "hgssh5", "10.213.86.0/24", "10m")
	b := f.start("--workflow settle --ssh")
	f.waitSSH(b.ID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	term := openTerminal(t, ctx, f, b.ID)
	term.waitFor("builder@build-")
	term.waitFor("the build's steps are done (finished)")
	term.waitFor("log out to finish the build now")
	term.send(map[string]any{"type": "input", "data": "exit\r"})
	if nb, _ := f.wait(b.ID, 30*time.Second); nb.Status != build.Finished {
		t.Errorf("after exit: %s", nb.Status)
	}
}
