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
		{[]string{"--database", "postgres://hangar@db.example.com/hangar", "--gateway-addr", "gw.example.com:2222"}, ""},
		{[]string{"--gateway-addr", "gw.example.com:2222"}, "--gateway-addr: separate gateways share the server's state through PostgreSQL: set --database"},
		{[]string{"--database", "postgres://hangar@db.example.com/hangar", "--gateway-addr", "gw.example.com"}, "want host:port"},
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

// TestGatewayFlags: what `hangar gateway` refuses before it starts.
func TestGatewayFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--database", "mysql://db/hangar"}, "--database: want the servers' PostgreSQL URL"},
		{[]string{"--database", "postgres://db/hangar"}, "--advertise: set the host:port"},
		{[]string{"--database", "postgres://127.0.0.1:1/hangar", "--advertise", "10.0.0.1:2224", "--host-ca", dir + "/none"}, "--host-ca: host CA: open " + dir + "/none"},
		{[]string{"--max-conns", "0"}, "--max-conns 0: must be at least 1"},
		{[]string{"--log-level", "loud"}, "--log-level \"loud\""},
	} {
		cmd := gatewayCmd()
		cmd.SetArgs(c.args)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
