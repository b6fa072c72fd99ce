package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
)

// The webhook mode measures what unverified webhook deliveries cost the
// server: -posts parallel posts of -hookbytes each (default 40 of 24 MiB,
// under GitHub's 25 MB cap) with a well-formed but wrong signature, against
// a `hangar server` (host driver). It reports the server's resident memory
// before and its peak (VmHWM) after, and the answers' status codes.

func runWebhook(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "hangar-bench-webhook-")
	if err != nil {
		return err
	}
	defer removeTemp(o, tmp, &err)
	bin, err := buildBinary(ctx, filepath.Join(tmp, "bin"))
	if err != nil {
		return err
	}
	repo, err := makeRepo(ctx, filepath.Join(tmp, "git"), workflowFile)
	if err != nil {
		return err
	}
	s, err := startServer(ctx, bin, "host", filepath.Join(tmp, "host"), 1)
	if err != nil {
		return err
	}
	defer s.finish(&err)
	if _, err := s.api.AddApp(ctx, api.AppRequest{Name: appName, Repo: repo, WebhookSecret: "bench-secret"}); err != nil {
		return fmt.Errorf("add app: %w", err)
	}
	before, err := procStatus(s.pid())
	if err != nil {
		return err
	}
	logf("webhook: server pid %d: VmRSS %s, VmHWM %s; posting %d x %s with a bad signature", s.pid(), mib(before["VmRSS"]), mib(before["VmHWM"]), o.posts, humanBytes(o.hookBytes))
	codes := make([]int, o.posts)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/api/v1/webhooks/"+appName, io.LimitReader(zeroReader{}, o.hookBytes))
			req.ContentLength = o.hookBytes
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("ab", 32))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes[i] = -1
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	after, err := procStatus(s.pid())
	if err != nil {
		return err
	}
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	var parts []string
	for c, n := range count {
		parts = append(parts, fmt.Sprintf("%d x %d", n, c))
	}
	sort.Strings(parts)
	fmt.Fprintf(os.Stdout, "| Posts | Size each | Answers | Time | Server RSS before | Server RSS after | Server peak RSS (VmHWM) before | after |\n")
	fmt.Fprintf(os.Stdout, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(os.Stdout, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", o.posts, humanBytes(o.hookBytes), strings.Join(parts, ", "),
		elapsed.Round(time.Millisecond), mib(before["VmRSS"]), mib(after["VmRSS"]), mib(before["VmHWM"]), mib(after["VmHWM"]))
	fmt.Fprintf(os.Stdout, "Machine: %d CPUs; load average %s.\n", runtime.NumCPU(), loadavg())
	if count[401]+count[503] != o.posts {
		return fmt.Errorf("answers %v: every bad-signature post should get 401 (or 503 when it waited too long for a reading slot)", count)
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
