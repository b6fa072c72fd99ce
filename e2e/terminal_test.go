package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestTerminalRelay drives the browser terminal's WebSocket the way the web
// UI does: a login shell on the machine, through the gateway; closing it
// is a logout.
func TestTerminalRelay(t *testing.T) {
	f := newSSHFixture(t, "hgssh4", "10.213.90.0/24", "10m")
	b := f.start("--workflow quick --ssh")
	f.waitSSH(b.ID)

	req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/builds/%d/terminal", f.s.URL, b.ID), nil)
	req.Header.Set("Authorization", "Bearer "+f.s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tk struct{ URL string }
	_ = json.NewDecoder(resp.Body).Decode(&tk)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || tk.URL == "" {
		t.Fatalf("ticket: %d %+v", resp.StatusCode, tk)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(f.s.URL, "http") + tk.URL
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// A ticket opens one terminal only.
	if ws2, _, err := websocket.Dial(ctx, wsURL, nil); err == nil {
		ws2.CloseNow()
		t.Error("a terminal ticket was used twice")
	}
	send := func(m map[string]any) {
		data, _ := json.Marshal(m)
		if err := ws.Write(ctx, websocket.MessageText, data); err != nil {
			t.Fatal(err)
		}
	}
	var screen strings.Builder
	waitFor := func(want string) {
		t.Helper()
		for !strings.Contains(screen.String(), want) {
			_, data, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v\nscreen:\n%s", want, err, screen.String())
			}
			screen.Write(data)
		}
	}
	send(map[string]any{"type": "resize", "cols": 100, "rows": 30})
	waitFor("builder@build-")
	send(map[string]any{"type": "input", "data": "echo cols=$(tput cols) dir=$FCI_BUILD_DIR\r"})
	waitFor("cols=100 dir=/home/builder/clone")
	if nb := f.show(b.ID); nb.SSH.State != build.SSHConnected || len(nb.SSH.Sessions) != 1 || !strings.Contains(nb.SSH.Sessions[0].Client, "browser") {
		t.Errorf("while connected: %+v", nb.SSH)
	}
	send(map[string]any{"type": "input", "data": "exit\r"})
	nb, _ := f.wait(b.ID, 30*time.Second)
	if nb.Status != build.Finished || !strings.Contains(nb.SSH.ClosedReason, "logged out") {
		t.Errorf("after exit: %s %+v", nb.Status, nb.SSH)
	}
}
