package sshd

import (
	"fmt"
	"io"
	"strings"

	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/vt"
)

// screen is what a login shell's terminal shows: a terminal emulator
// (charmbracelet/x/vt) fed with everything the shell's pty writes, so that a
// client that re-attaches gets the screen as it was, the way tmux redraws its
// window on attach. It is not safe for concurrent use: its shell's mutex
// guards it.
type screen struct {
	term  *vt.Emulator
	modes map[ansi.DECMode]bool // the restorable modes that are set now
}

// restoredModes are the DEC private modes a re-attached client is put back
// in, besides the alternate screen and the cursor's visibility: how keys and
// the mouse are reported and bracketed paste.
var restoredModes = []ansi.DECMode{
	ansi.ModeCursorKeys, ansi.ModeNumericKeypad,
	ansi.ModeMouseX10, ansi.ModeMouseNormal, ansi.ModeMouseButtonEvent, ansi.ModeMouseAnyEvent,
	ansi.ModeMouseExtSgr, ansi.ModeFocusEvent, ansi.ModeBracketedPaste,
}

// screenSize is the size of a screen whose client gave none (OpenSSH's
// `ssh -tt` without a local terminal sends 0 x 0).
func screenSize(cols, rows int) (int, int) {
	if cols <= 0 || rows <= 0 {
		return 80, 24
	}
	return cols, rows
}

// newScreen returns an empty screen of cols x rows. Its answers to
// terminal queries (cursor position, device attributes) are read from
// term.Read.
func newScreen(cols, rows int) *screen {
	cols, rows = screenSize(cols, rows)
	s := &screen{
		term:  vt.NewEmulator(cols, rows),
		modes: make(map[ansi.DECMode]bool),
	}
	// Only the screen is restored; keep the emulator's history small.
	s.term.SetScrollbackSize(1)
	s.term.SetCallbacks(vt.Callbacks{
		EnableMode: func(m ansi.Mode) {
			if d, ok := m.(ansi.DECMode); ok {
				s.modes[d] = true
			}
		},
		DisableMode: func(m ansi.Mode) {
			if d, ok := m.(ansi.DECMode); ok {
				delete(s.modes, d)
			}
		},
	})
	return s
}

// write feeds output of the pty to the emulator.
func (s *screen) write(p []byte) {
	_, _ = s.term.Write(p)
}

// resize changes the screen's size. When it gets shorter, the lines above
// the cursor scroll off (as in xterm), so that the cursor's line stays.
func (s *screen) resize(cols, rows int) {
	cols, rows = screenSize(cols, rows)
	if cols == s.term.Width() && rows == s.term.Height() {
		return
	}
	pos := s.term.CursorPosition()
	if n := pos.Y - rows + 1; n > 0 {
		// Scroll up n lines and follow with the cursor.
		s.write(fmt.Appendf(nil, "\x1b[%dS\x1b[%d;%dH", n, pos.Y-n+1, pos.X+1))
	}
	s.term.Resize(cols, rows)
}

// render returns what redraws the screen on a terminal of the same size:
// the alternate screen if it is in use, every line with its colours, the
// cursor's position and visibility, and the modes of restoredModes.
func (s *screen) render() []byte {
	var b strings.Builder
	b.WriteString("\x1b[0m")
	if s.term.IsAltScreen() {
		b.WriteString(ansi.SetMode(ansi.ModeAltScreenSaveCursor))
	}
	b.WriteString("\x1b[H\x1b[2J")
	lines := strings.Split(s.term.Render(), "\n")
	if h := s.term.Height(); len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(l)
		b.WriteString("\x1b[0m")
	}
	pos := s.term.CursorPosition()
	fmt.Fprintf(&b, "\x1b[%d;%dH", pos.Y+1, pos.X+1)
	if s.term.CursorHidden() {
		b.WriteString(ansi.ResetMode(ansi.ModeTextCursorEnable))
	} else {
		b.WriteString(ansi.SetMode(ansi.ModeTextCursorEnable))
	}
	for _, m := range restoredModes {
		if s.modes[m] {
			b.WriteString(ansi.SetMode(m))
		}
	}
	return []byte(b.String())
}

// text returns the screen's characters without styles, trailing spaces
// trimmed, for tests and diagnostics.
func (s *screen) text() string { return s.term.String() }

// close ends the emulator's answers: their reader gets EOF. (Emulator.Close
// would do the same but races with Read.)
func (s *screen) close() {
	if pw, ok := s.term.InputPipe().(*io.PipeWriter); ok {
		_ = pw.CloseWithError(io.EOF)
	}
}
