package store

import (
	"context"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestBuildRequests: a request made through one Store (server) wakes
// another (the runner's server), which sees it only for the running
// builds its runner claimed, answers it once, and the answer wakes the
// asker.
func TestBuildRequests(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		asker, owner := twoStores(t, db)
		id := queue(t, owner, build.Spec{}, true)
		other := queue(t, owner, build.Spec{}, true)
		mine, err := owner.CreateRunner(ctx, "mine", "hash-mine")
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := owner.CreateRunner(ctx, "theirs", "hash-theirs")
		if err != nil {
			t.Fatal(err)
		}
		if b, _, err := owner.ForRunner(Claim{Runner: mine.ID}).ClaimBuild(ctx); err != nil || b.ID != id {
			t.Fatalf("claim: %v, %v", b, err)
		}
		if b, _, err := owner.ForRunner(Claim{Runner: theirs.ID}).ClaimBuild(ctx); err != nil || b.ID != other {
			t.Fatalf("claim: %v, %v", b, err)
		}
		wake, unsub := owner.Subscribe(BuildRequestChanges)
		defer unsub()
		every, unsubEvery := owner.Subscribe(0)
		defer unsubEvery()
		wait := func(ch <-chan struct{}, what string) {
			t.Helper()
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				t.Fatalf("no wake-up within 30 s: %s", what)
			}
		}
		q, err := asker.AddBuildRequest(ctx, BuildRequest{BuildID: id, Kind: RequestExtend, By: 90 * time.Second, Who: "ann"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := asker.AddBuildRequest(ctx, BuildRequest{BuildID: other, Kind: RequestContinue, Who: "bob"}); err != nil {
			t.Fatal(err)
		}
		wait(wake, "request made")
		select {
		case <-every:
			t.Fatal("a build request woke the subscribers of every build")
		default:
		}
		pending, err := owner.PendingBuildRequests(ctx, mine.ID)
		if err != nil || len(pending) != 1 || pending[0].ID != q || pending[0].Kind != RequestExtend || pending[0].By != 90*time.Second || pending[0].Who != "ann" {
			t.Fatalf("pending for my runner: %+v, %v", pending, err)
		}
		answered, unsubA := asker.Subscribe(BuildRequestChanges)
		defer unsubA()
		if err := owner.AnswerBuildRequest(ctx, q, "no SSH access to extend"); err != nil {
			t.Fatal(err)
		}
		wait(answered, "request answered")
		if err := owner.AnswerBuildRequest(ctx, q, ""); err != nil {
			t.Fatal(err)
		}
		got, err := asker.BuildRequestOf(ctx, q)
		if err != nil || !got.Done || got.Err != "no SSH access to extend" {
			t.Fatalf("answer as the asker sees it: %+v, %v (the first answer stays)", got, err)
		}
		if pending, err := owner.PendingBuildRequests(ctx, mine.ID); err != nil || len(pending) != 0 {
			t.Fatalf("pending after the answer: %+v, %v", pending, err)
		}
		if err := owner.PruneBuildRequests(ctx, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := asker.BuildRequestOf(ctx, q); err != ErrNotFound {
			t.Fatalf("after pruning: %v", err)
		}
	})
}
