package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
)

// buildLogs serves a build's log: a JSON array of lines (at most ?limit=,
// default 10000, after ?after=SEQ: page with the last seq), or with
// `Accept: text/event-stream` (or ?follow=1) a live Server-Sent Events
// stream: "build" events carry the build whenever it changes, "log" events
// one line each (the SSE id is the line's seq, so a client that reconnects
// with Last-Event-ID resumes), and a final "end" event once the build has
// ended and every line was sent.
func (s *Server) buildLogs(w http.ResponseWriter, r *http.Request) {
	b, ok := s.lookupBuild(w, r)
	if !ok {
		return
	}
	var after int64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		after, _ = strconv.ParseInt(v, 10, 64)
	} else if v := r.URL.Query().Get("after"); v != "" {
		after, _ = strconv.ParseInt(v, 10, 64)
	}
	follow := r.Header.Get("Accept") == "text/event-stream" || r.URL.Query().Get("follow") != ""
	if !follow {
		limit := 10000
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100000 {
				writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 100000")
				return
			}
			limit = n
		}
		lines, err := s.cfg.Store.Logs(r.Context(), b.ID, after, limit)
		if err != nil {
			s.internal(w, "read logs", err)
			return
		}
		writeJSON(w, http.StatusOK, lines)
		return
	}

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	wake, unsub := s.cfg.Store.Subscribe(b.ID)
	defer unsub()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var lastBuild []byte
	for {
		// Read the build before the lines and send it after them: the
		// runner stores a step's lines before it marks the step ended, so a
		// client sees every line of a step before the step's end, and every
		// line of a build before its end.
		nb, err := s.cfg.Store.Build(r.Context(), b.ID)
		if err != nil {
			return
		}
		for {
			lines, err := s.cfg.Store.Logs(r.Context(), b.ID, after, 1000)
			if err != nil {
				return
			}
			for _, l := range lines {
				data, _ := json.Marshal(l)
				fmt.Fprintf(w, "id: %d\nevent: log\ndata: %s\n\n", l.Seq, data)
				after = l.Seq
			}
			if len(lines) < 1000 {
				break
			}
		}
		if data, _ := json.Marshal(s.present(r, nb)); string(data) != string(lastBuild) {
			fmt.Fprintf(w, "event: build\ndata: %s\n\n", data)
			lastBuild = data
		}
		if nb.Status.Done() {
			data, _ := json.Marshal(api.End{Status: nb.Status})
			fmt.Fprintf(w, "event: end\ndata: %s\n\n", data)
			_ = rc.Flush()
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-wake:
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		}
	}
}
