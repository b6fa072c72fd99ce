package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// notifyChannel is the channel of notifyTriggers.
const notifyChannel = "hangar_builds"

// OpenPostgres opens the PostgreSQL database named by url, migrating it,
// and listens for the changes other processes make to it: a Store's
// subscribers wake for changes from any process using the database.
func OpenPostgres(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx leaves the password out of its message.
		return nil, fmt.Errorf("database URL: %w", err)
	}
	where := fmt.Sprintf("PostgreSQL database %q on %s", cfg.Database, cfg.Host)
	if cfg.ConnectTimeout == 0 { // the URL's connect_timeout
		cfg.ConnectTimeout = 10 * time.Second
	}
	listenCfg := cfg.Copy()
	origin := make([]byte, 8)
	rand.Read(origin)
	// Each of this Store's connections names it in the notifications its
	// writes send (notifyTriggers), so that its listener skips them: its
	// own subscribers were woken at once.
	cfg.RuntimeParams["hangar.origin"] = hex.EncodeToString(origin)
	s, err := open(ctx, stdlib.OpenDB(*cfg), postgresDialect)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.origin = cfg.RuntimeParams["hangar.origin"]
	conn, err := s.listenConn(ctx, listenCfg)
	if err != nil {
		s.db.Close()
		return nil, fmt.Errorf("open %s: listen for changes: %w", where, err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.listen(lctx, listenCfg, conn)
	}()
	s.stopListening = func() {
		cancel()
		<-done
	}
	return s, nil
}

// listenConn connects and listens on notifyChannel.
func (s *Store) listenConn(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	s.listenPID.Store(conn.PgConn().PID())
	return conn, nil
}

// listen wakes this Store's subscribers for the changes other processes
// make, until ctx ends. When its connection fails it connects again
// (waiting up to 5 s between attempts), then wakes every subscriber:
// what changed in between went unseen.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn) {
	const minWait, maxWait = 100 * time.Millisecond, 5 * time.Second
	wait := minWait
	for {
		if conn == nil {
			var err error
			if conn, err = s.listenConn(ctx, cfg); err != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, maxWait)
				continue
			}
			wait = minWait
			s.notifyAll()
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			cancel()
			conn = nil
			if ctx.Err() != nil {
				return
			}
			continue
		}
		idText, origin, _ := strings.Cut(n.Payload, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		switch {
		case err != nil:
			s.notifyAll() // not the triggers' format: wake everyone
		case origin != s.origin:
			s.notify(id)
		}
	}
}

// notifyAll wakes every subscriber.
func (s *Store) notifyAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, chans := range s.subs {
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
