package main

import (
	"strings"
	"testing"
)

// TestRunnerFlags: the flags that `hangar runner` validates before it
// starts.
func TestRunnerFlags(t *testing.T) {
	t.Setenv("HANGAR_SERVER", "")
	t.Setenv("HANGAR_RUNNER_TOKEN", "")
	for _, c := range []struct {
		args []string
		want string // error substring; "--log-level": the flags were accepted
	}{
		{[]string{"--token", "hrt_x"}, "--server: give the URL"},
		{[]string{"--server", "127.0.0.1:1"}, "--token: give the runner's token"},
		{[]string{"--server", "127.0.0.1:1", "--token", "hgr_user"}, "an API token is not a runner token"},
		{[]string{"--server", "http://a:1,b:2", "--token", "hrt_x"}, "--log-level"},
		{[]string{"--server", "a:1", "--token", "hrt_x", "--sandbox-egress-allow", "10.0.0.10/32"}, "--log-level"},
		{[]string{"--server", "a:1", "--token", "hrt_x", "--sandbox-egress-allow", "10.0.0.10/16"}, "did you mean 10.0.0.0/16 or 10.0.0.10/32"},
		{[]string{"--server", "a:1", "--token", "hrt_x", "--sandbox-egress=off", "--sandbox-egress-allow", "10.0.0.10/32"}, "needs --sandbox-egress=on"},
	} {
		var cf clientFlags
		cmd := runnerCmd(&cf)
		cmd.PersistentFlags().StringVar(&cf.server, "server", "", "")
		cmd.PersistentFlags().StringVar(&cf.token, "token", "", "")
		cmd.SetArgs(append(c.args, "--log-level", "invalid"))
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
