package runnerapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// benchArtifactSize is the size of one artifact of BenchmarkArtifact.
const benchArtifactSize = 64 << 20

// BenchmarkArtifact: a runner on another host uploads a 64 MiB artifact
// through the runner API (loopback HTTP, streamed) and a server reads it
// back, on SQLite (files) and on PostgreSQL (1 MiB chunks in the
// database). MB/s is of the artifact's bytes.
//
//	HANGAR_TEST_POSTGRES=require go test -run '^$' -bench BenchmarkArtifact -benchtime 4x ./internal/runnerapi/
func BenchmarkArtifact(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			var st *store.Store
			var err error
			k := &artifact.Keeper{Dir: b.TempDir(), MaxFile: benchArtifactSize, MaxBuild: 1 << 50}
			if name == "sqlite" {
				st, err = store.OpenSQLite(filepath.Join(b.TempDir(), "hangar.db"))
			} else {
				st, err = store.OpenPostgres(ctx, pgtest.DB(b))
				k.InDatabase = true
			}
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			k.Store = st
			if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
				b.Fatal(err)
			}
			tok := server.RunnerTokenPrefix + "bench"
			if _, err := st.CreateRunner(ctx, "bench", server.HashToken(tok)); err != nil {
				b.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv := httptest.NewServer(New(Config{Store: st, Logger: log, StaleAfter: time.Minute, Files: k}))
			defer srv.Close()
			c := NewClient([]string{srv.URL}, tok, log)
			if _, err := c.Start(ctx, StartRequest{Host: "h", Labels: []string{"linux"}, Capacity: 1}); err != nil {
				b.Fatal(err)
			}
			bld := &build.Build{App: "demo", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
			if err := st.CreateBuild(ctx, bld, []byte(`{"instance_type":"linux"}`)); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.ClaimBuild(ctx); err != nil {
				b.Fatal(err)
			}
			files, err := c.Files(ctx)
			if err != nil {
				b.Fatal(err)
			}
			n := 0 // artifacts kept: each has its own name
			for _, dir := range []string{"upload", "download"} {
				b.Run(dir, func(b *testing.B) {
					b.SetBytes(benchArtifactSize)
					for range b.N {
						n++
						name := fmt.Sprintf("out/%d.bin", n)
						if dir == "download" {
							b.StopTimer()
						}
						_, err := files.PutArtifact(ctx, bld.ID, name, io.LimitReader(zeros{}, benchArtifactSize), benchArtifactSize, func(int64) error { return nil })
						if err != nil {
							b.Fatal(err)
						}
						if dir == "upload" {
							continue
						}
						b.StartTimer()
						f, _, err := k.OpenArtifact(ctx, bld.ID, name)
						if err != nil {
							b.Fatal(err)
						}
						if got, err := io.Copy(io.Discard, f); err != nil || got != benchArtifactSize {
							b.Fatalf("read back %d bytes, %v", got, err)
						}
						f.Close()
					}
				})
			}
		})
	}
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
