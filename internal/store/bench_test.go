package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// BenchmarkAppendLog writes a verbose step's log in the runner's batches
// (four chunks of about 256 KiB); MB/s is of log text.
func BenchmarkAppendLog(b *testing.B) {
	eachBackendB(b, func(b *testing.B, s *Store) {
		bl := newBuild(b, s, build.Building)
		var chunks []build.LogChunk
		var size int64
		seq := int64(1)
		for range 4 {
			var data []byte
			n := 0
			for len(data) < 256<<10 {
				data = fmt.Appendf(data, "Compiling module %d of many: src/module_%d.go ok\n", seq+int64(n), n)
				n++
			}
			chunks = append(chunks, build.LogChunk{Seq: seq, Lines: n, Step: 1, Time: time.Now(), Data: data})
			seq += int64(n)
			size += int64(len(data))
		}
		b.SetBytes(size)
		b.ResetTimer()
		for b.Loop() {
			for i := range chunks {
				chunks[i].Seq += seq - 1
			}
			if err := s.AppendLog(context.Background(), bl.ID, chunks); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkNotifyAcrossStores times a change on one store until another
// store's subscriber wakes (PostgreSQL: trigger, NOTIFY, the listener).
func BenchmarkNotifyAcrossStores(b *testing.B) {
	ctx := context.Background()
	db := eachBackendPostgres(b)
	w, r := db.open(b), db.open(b)
	bl := newBuild(b, w, build.Queued)
	wake, unsub := r.Subscribe(bl.ID)
	defer unsub()
	for b.Loop() {
		bl.Message = time.Now().String()
		if _, err := w.UpdateBuild(ctx, bl); err != nil {
			b.Fatal(err)
		}
		<-wake
	}
}
