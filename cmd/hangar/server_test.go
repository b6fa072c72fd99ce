package main

import (
	"strings"
	"testing"
)

// TestServerFlags: the flags that `hangar server` validates itself.
func TestServerFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // error substring, "" for none
	}{
		{nil, ""},
		{[]string{"--sandbox-egress=off"}, ""},
		{[]string{"--sandbox-egress"}, ""},
		{[]string{"--sandbox-egress=maybe"}, "want on or off"},
		{[]string{"--sandbox-egress-allow", "10.1.2.3/32,10.9.0.0/16", "--sandbox-egress-deny", "203.0.113.0/24"}, ""},
		{[]string{"--sandbox-egress-allow", "10.1.2.3"}, ""},
		{[]string{"--sandbox-egress-allow", "10.1.2.3/16"}, "did you mean 10.1.0.0/16 or 10.1.2.3/32"},
		{[]string{"--sandbox-egress-deny", "example.com"}, "want an IPv4 network"},
		{[]string{"--sandbox-egress-deny", "2001:db8::/32"}, "not IPv4"},
		{[]string{"--sandbox-dns", "10.0.0.0/8"}, "want an IPv4 address"},
		{[]string{"--sandbox-egress=off", "--sandbox-egress-allow", "10.1.2.3/32"}, "need --sandbox-egress=on"},
		{[]string{"--ssh-max-conns", "100", "--ssh-max-unauthenticated", "50", "--ssh-max-unauthenticated-per-source", "5", "--ssh-auth-delay-max", "2s"}, ""},
		{[]string{"--ssh-max-conns", "100"}, "at most half of --ssh-max-conns 100"},
		{[]string{"--ssh-max-unauthenticated-per-source", "0"}, "--ssh-max-unauthenticated-per-source 0: must be at least 1"},
		{[]string{"--ssh-auth-delay-max", "0s"}, "must be positive"},
		{[]string{"--database", "postgres://hangar@db.example.com/hangar"}, ""},
		{[]string{"--database", "mysql://hangar:secret@db.example.com/hangar"}, "--database: want a PostgreSQL URL"},
	} {
		cmd := serverCmd()
		// Parse and validate only: the command must fail before starting.
		cmd.SetArgs(append(c.args, "--log-level", "invalid"))
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		err := cmd.Execute()
		if c.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--log-level") {
				t.Errorf("%v: %v, want the flags accepted", c.args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
