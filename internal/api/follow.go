package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// LogEvent is one event of a build's live log: exactly one field is set.
type LogEvent struct {
	// Build is the build whenever it changes. Every line of a step comes
	// before the build that shows the step ended.
	Build *build.Build
	// Line is one line of the log.
	Line *build.LogLine
	// End is the last event: the build has ended and every line was sent.
	End *End
}

// Follow streams build id's log from its start as it is written, calling
// fn for each event, until the build has ended (then it returns nil after
// fn has seen the End event), fn returns an error (which Follow returns), or
// ctx ends. A dropped connection is resumed after the last line received;
// Follow gives up after a few failed attempts to reconnect.
func (c *Client) Follow(ctx context.Context, id int64, fn func(LogEvent) error) error {
	path := buildPath(id, "/logs")
	lastID := ""
	for attempt := 0; ; attempt++ {
		h := http.Header{"Accept": {"text/event-stream"}}
		if lastID != "" {
			h.Set("Last-Event-ID", lastID)
		}
		resp, err := c.send(ctx, http.MethodGet, path, nil, h)
		if errors.Is(err, ErrUnreachable) && attempt < 5 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return err
		}
		done, err := readEvents(resp, &lastID, fn)
		resp.Body.Close()
		if done || err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		attempt = -1 // the stream was up: a fresh count for the reconnect
	}
}

// readEvents reads a Server-Sent Events stream, calling fn for each
// event, until the stream ends or fn returns an error. done reports the end
// event; lastID follows the ids of the events.
func readEvents(resp *http.Response, lastID *string, fn func(LogEvent) error) (done bool, err error) {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event, data, id string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event == "" && data == "" {
				continue
			}
			ev, err := decodeEvent(event, data)
			if err != nil {
				return false, err
			}
			if id != "" {
				*lastID = id
			}
			event, data, id = "", "", ""
			if ev == (LogEvent{}) {
				continue // an event this client does not know
			}
			if err := fn(ev); err != nil {
				return false, err
			}
			if ev.End != nil {
				return true, nil
			}
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return false, fmt.Errorf("live log: an event is longer than 4 MiB")
	}
	return false, nil
}

// decodeEvent makes the LogEvent of an SSE event; an unknown event gives a
// zero LogEvent.
func decodeEvent(event, data string) (LogEvent, error) {
	var ev LogEvent
	var v any
	switch event {
	case "build":
		ev.Build = new(build.Build)
		v = ev.Build
	case "log":
		ev.Line = new(build.LogLine)
		v = ev.Line
	case "end":
		ev.End = new(End)
		v = ev.End
	default:
		return ev, nil
	}
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return LogEvent{}, fmt.Errorf("live log: %s event: %w", event, err)
	}
	return ev, nil
}
