package main

// The SSH mode (`go run ./bench -mode ssh`) measures SSH builds against
// OpenSSH:
//
//   - start to first command: from `POST /api/v1/builds {"ssh": true}` to
//     the first `bash script.sh true` that exits 0;
//   - throughput: `ssh -F D/config build-N 'head -c 1073741824 /dev/zero'`
//     through Hangar's gateway, against two OpenSSH sshd instances (jump
//     host and target) started here, reached with `ssh -J jump target`;
//   - connect latency: `bash script.sh true` on a ready build against
//     `ssh -J jump target true`.
//
// See docs/benchmarks.md, section SSH.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
)

// sshWorkflowFile is the codemagic.yaml of the SSH mode: its one workflow
// holds the build's machine for the whole run.
const sshWorkflowFile = `workflows:
  hold:
    max_build_duration: 30
    scripts:
      - name: hold
        script: sleep 1700
`

const sshd = "/usr/sbin/sshd"

// sshStart is one build of the start-to-first-command run. The durations
// are from t0, just before POST /api/v1/builds; those of the server are
// its timestamps (same machine clock, milliseconds).
type sshStart struct {
	id        int64
	script    string        // the saved script
	api       time.Duration // POST answered (client)
	claimed   time.Duration // build started_at (server)
	tunnelUp  time.Duration // event ssh_tunnel_up (builder's clock, same kernel)
	fetched   time.Duration // GET .../ssh/script answered 200 (client)
	firstTrue time.Duration // the first `bash script.sh true` that exits 0 ended (client)
	gets      int           // script requests
	attempts  int           // `bash script.sh true` runs
}

// runSSH is the SSH mode.
func runSSH(ctx context.Context, o options) (err error) {
	if len(o.drivers) != 1 {
		return errors.New("-mode ssh measures one driver: -driver sandbox (the default in this mode) or host")
	}
	driver := o.drivers[0]
	tmp, err := os.MkdirTemp("", "hangar-bench-ssh-")
	if err != nil {
		return err
	}
	defer removeTemp(o, tmp, &err)
	if err := ensureSSHD(ctx); err != nil {
		return err
	}
	logf("building the hangar binary")
	bin, err := buildBinary(ctx, filepath.Join(tmp, "bin"))
	if err != nil {
		return err
	}
	logf("making the repository")
	repo, err := makeRepo(ctx, filepath.Join(tmp, "git"), sshWorkflowFile)
	if err != nil {
		return err
	}
	// The scripts and ssh write their temporary files here.
	sshTmp := filepath.Join(tmp, "clienttmp")
	if err := os.MkdirAll(sshTmp, 0o700); err != nil {
		return err
	}
	env := append(os.Environ(), "TMPDIR="+sshTmp)

	load0 := loadavg()
	s, err := startWithApp(ctx, bin, driver, filepath.Join(tmp, driver), 4, repo)
	if err != nil {
		return err
	}
	defer s.finish(&err)
	gw := gatewayAddr(s)
	logf("%s: SSH gateway %s", driver, gw)

	// Whatever happens, cancel the builds started (also on ^C).
	var started []int64
	defer func() {
		if cerr := cancelAll(context.WithoutCancel(ctx), s, started, o.poll); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	// (a) Start to the first command, one build at a time; every build
	// but the last is canceled before the next starts.
	var warm, starts []sshStart
	for i := 0; i < o.warmup+o.n; i++ {
		st, err := sshStartOnce(ctx, s, filepath.Join(tmp, "scripts"), env, &started)
		if err != nil {
			return err
		}
		logf("%s: build %d: script %v (%d requests), first `true` done %v (%d attempts)", driver, st.id, ms(st.fetched), st.gets, ms(st.firstTrue), st.attempts)
		if i < o.warmup {
			warm = append(warm, st)
		} else {
			starts = append(starts, st)
		}
		if i < o.warmup+o.n-1 {
			if err := cancelAll(ctx, s, []int64{st.id}, o.poll); err != nil {
				return err
			}
		}
	}
	held := starts[len(starts)-1]
	alias := build.Alias(held.id)

	// The build's ssh_config, as a user writes it.
	hdir := filepath.Join(tmp, "hangar-ssh")
	cfgCmd := exec.CommandContext(ctx, bin, "build", "ssh-config", strconv.FormatInt(held.id, 10), "--dir", hdir)
	cfgCmd.Env = append(slices.Clone(env), "HANGAR_SERVER="+s.url, "HANGAR_TOKEN="+s.token)
	if out, err := cfgCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("hangar build ssh-config: %v\n%s", err, out)
	}
	hcfg := filepath.Join(hdir, "config")

	logf("starting the OpenSSH jump host and target")
	ch, err := startChain(ctx, filepath.Join(tmp, "openssh"))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := ch.stop(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	paths := sshPaths{
		hangar:        []string{"-F", hcfg, alias},
		openssh:       []string{"-F", ch.config, "-J", "jump", "target"},
		opensshDirect: []string{"-F", ch.config, "target"},
	}
	rep := &sshReport{driver: driver, n: o.n, runs: o.runs, bytes: o.bytes, gateway: gw, alias: alias, load0: load0,
		warm: warm, starts: starts, user: ch.user}

	// Which algorithms each hop negotiated, from ssh -v.
	for _, p := range []struct {
		name string
		args []string
	}{{"hangar", paths.hangar}, {"openssh", paths.openssh}} {
		hops, err := negotiated(ctx, env, p.args)
		if err != nil {
			return fmt.Errorf("%s: ssh -v: %w", p.name, err)
		}
		rep.hops = append(rep.hops, hopsOf{p.name, hops})
	}
	// Check that a transfer delivers every byte before timing any.
	const check = 64 << 20
	for _, p := range [][]string{paths.hangar, paths.openssh, paths.opensshDirect} {
		n, err := countBytes(ctx, env, p, check)
		if err != nil {
			return err
		}
		if n != check {
			return fmt.Errorf("ssh %s: got %d bytes of %d", strings.Join(p, " "), n, check)
		}
	}
	logf("64 MiB check transfers complete on every path")

	// (b) Throughput, interleaved.
	remote := "head -c " + strconv.FormatInt(o.bytes, 10) + " /dev/zero"
	for i := range o.runs {
		order := []string{"hangar", "openssh", "openssh-direct"}
		if i%2 == 1 {
			order = []string{"openssh", "hangar", "openssh-direct"}
		}
		for _, name := range order {
			var x xfer
			var err error
			switch name {
			case "hangar":
				x, err = hangarTransfer(ctx, env, s.pid(), append(slices.Clone(paths.hangar), remote))
			case "openssh":
				x, err = chainTransfer(ctx, env, ch, true, append(slices.Clone(paths.openssh), remote))
			case "openssh-direct":
				x, err = chainTransfer(ctx, env, ch, false, append(slices.Clone(paths.opensshDirect), remote))
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// A failed transfer is a result: note it, let a dropped
				// tunnel come back, go on.
				if name == "hangar" {
					err = fmt.Errorf("%w\nevents of build %d (end):\n%s", err, held.id, buildEvents(ctx, s, held.id, 8))
				}
				logf("transfer %d/%d %s FAILED: %v", i+1, o.runs, name, err)
				rep.xfers = append(rep.xfers, namedXfer{name, xfer{err: err}})
				time.Sleep(time.Second)
				continue
			}
			logf("transfer %d/%d %s: %v, %.0f MiB/s", i+1, o.runs, name, ms(x.wall), mibps(o.bytes, x.wall))
			rep.xfers = append(rep.xfers, namedXfer{name, x})
		}
	}

	// (c) Connect latency, interleaved.
	lat := map[string][]time.Duration{}
	rep.latencyErrs = map[string][]string{}
	kinds := []struct {
		name string
		cmd  []string
	}{
		{"hangar script", []string{"bash", held.script, "true"}},
		{"openssh -J", append([]string{"ssh"}, append(slices.Clone(paths.openssh), "true")...)},
		{"hangar ssh -F", append([]string{"ssh"}, append(slices.Clone(paths.hangar), "true")...)},
		{"openssh direct", append([]string{"ssh"}, append(slices.Clone(paths.opensshDirect), "true")...)},
		{"openssh -J curve25519", []string{"ssh", "-F", ch.configCurve, "-J", "jump", "target", "true"}},
	}
	for i := range o.n {
		for j := range kinds {
			k := kinds[(i+j)%len(kinds)]
			t0 := time.Now()
			if out, err := runQuiet(ctx, env, k.cmd...); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				logf("%s FAILED: %v: %s", k.name, err, bytes.TrimSpace(out))
				rep.latencyErrs[k.name] = append(rep.latencyErrs[k.name], fmt.Sprintf("%v: %s", err, bytes.TrimSpace(out)))
				time.Sleep(time.Second)
				continue
			}
			lat[k.name] = append(lat[k.name], time.Since(t0))
		}
	}
	rep.latency = lat
	rep.load1 = loadavg()
	rep.print(os.Stdout)
	return nil
}

// ensureSSHD installs openssh-server if sshd is missing, without starting
// the system's sshd service.
func ensureSSHD(ctx context.Context) error {
	if _, err := os.Stat(sshd); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s is missing: apt-get install openssh-server (as root)", sshd)
	}
	logf("%s is missing: apt-get install -y openssh-server (its service is not started)", sshd)
	// policy-rc.d answering 101 stops the package from starting sshd.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
			return err
		}
		defer os.Remove(policy)
	}
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "openssh-server"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

var gatewayLine = regexp.MustCompile(`SSH gateway listening"? ssh=(\S+)`)

// gatewayAddr is the gateway address in the server's log.
func gatewayAddr(s *server) string {
	b, _ := os.ReadFile(s.logPath)
	if m := gatewayLine.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return "unknown"
}

// command is exec.CommandContext in its own process group, all of which
// is killed when ctx ends.
func command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runQuiet runs a command and returns its stdout and stderr.
func runQuiet(ctx context.Context, env []string, argv ...string) ([]byte, error) {
	return command(ctx, env, argv[0], argv[1:]...).CombinedOutput()
}

func sshStartOnce(ctx context.Context, s *server, dir string, env []string, started *[]int64) (sshStart, error) {
	var st sshStart
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return st, err
	}
	t0 := time.Now()
	b, err := s.api.StartBuild(ctx, api.StartRequest{App: appName, Workflow: "hold", SSH: true})
	if err != nil {
		return st, fmt.Errorf("start SSH build: %w", err)
	}
	st.api = time.Since(t0)
	st.id = b.ID
	*started = append(*started, b.ID)
	deadline := t0.Add(2 * time.Minute)
	var script string
	for {
		st.gets++
		script, err = s.api.SSHScript(ctx, b.ID, "")
		if err == nil {
			break
		}
		if api.StatusOf(err) != http.StatusTooEarly {
			return st, fmt.Errorf("build %d: SSH script: %w", b.ID, err)
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("build %d: no SSH script after 2 minutes", b.ID)
		}
	}
	st.fetched = time.Since(t0)
	st.script = filepath.Join(dir, build.Alias(b.ID)+".sh")
	if err := os.WriteFile(st.script, []byte(script), 0o700); err != nil {
		return st, err
	}
	for {
		st.attempts++
		out, err := runQuiet(ctx, env, "bash", st.script, "true")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("build %d: bash script.sh true still fails after 2 minutes: %v\n%s", b.ID, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.firstTrue = time.Since(t0)

	// The server's milestones.
	st.claimed, st.tunnelUp = -1, -1
	if b, err = s.api.Build(ctx, b.ID); err != nil {
		return st, err
	}
	if b.StartedAt != nil {
		st.claimed = b.StartedAt.Sub(t0)
	}
	evs, err := s.api.Events(ctx, b.ID)
	if err != nil {
		return st, err
	}
	for _, ev := range evs {
		if ev.Kind == "ssh_tunnel_up" {
			st.tunnelUp = ev.Time.Sub(t0)
			break
		}
	}
	return st, nil
}

// buildEvents is the last n events of build id, one a line.
func buildEvents(ctx context.Context, s *server, id int64, n int) string {
	evs, err := s.api.Events(ctx, id)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, ev := range evs[max(0, len(evs)-n):] {
		fmt.Fprintf(&b, "%s %s %v\n", ev.Time.Format("15:04:05.000"), ev.Kind, ev.Data)
	}
	return b.String()
}

// sshdProc is one of the OpenSSH servers.
type sshdProc struct {
	name    string
	port    int
	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{}
}

// chain is OpenSSH's ProxyJump chain: client → jump sshd → target sshd.
type chain struct {
	dir    string
	config string // the client's ssh_config
	// configCurve is config with KexAlgorithms curve25519-sha256, the
	// key exchange that Hangar's gateway and builder use (x/crypto has no
	// sntrup761x25519, OpenSSH 9.2's default).
	configCurve string
	user        string
	jump        *sshdProc
	target      *sshdProc
}

func sshKeygen(ctx context.Context, path, comment string) (string, error) {
	cmd := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	return strings.TrimSpace(string(pub)), err
}

// startChain starts the jump host and the target on loopback, each with
// its own host key, both admitting one temporary client key.
func startChain(ctx context.Context, dir string) (c *chain, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	c = &chain{dir: dir, config: filepath.Join(dir, "ssh_config"), configCurve: filepath.Join(dir, "ssh_config_curve25519"), user: u.Username}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.stop())
		}
	}()
	// sshd needs its privilege separation directory.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) && os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}
	clientPub, err := sshKeygen(ctx, filepath.Join(dir, "client_key"), "bench-client")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(clientPub+"\n"), 0o600); err != nil {
		return nil, err
	}
	var known strings.Builder
	for _, name := range []string{"jump", "target"} {
		hostPub, err := sshKeygen(ctx, filepath.Join(dir, name+"_host_key"), "bench-"+name)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&known, "bench-%s %s\n", name, hostPub)
		p, err := startSSHD(ctx, dir, name)
		if err != nil {
			return nil, err
		}
		if name == "jump" {
			c.jump = p
		} else {
			c.target = p
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte(known.String()), 0o600); err != nil {
		return nil, err
	}
	// The same client options as Hangar's config (connect.Access.Config).
	var cfg strings.Builder
	for _, p := range []*sshdProc{c.jump, c.target} {
		fmt.Fprintf(&cfg, "Host %s\n  HostName 127.0.0.1\n  Port %d\n  User %s\n  HostKeyAlias bench-%s\n\n", p.name, p.port, c.user, p.name)
	}
	fmt.Fprintf(&cfg, "Host *\n  IdentityFile \"%s/client_key\"\n  UserKnownHostsFile \"%s/known_hosts\"\n", dir, dir)
	cfg.WriteString("  IdentitiesOnly yes\n  IdentityAgent none\n  PreferredAuthentications publickey\n")
	cfg.WriteString("  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
	cfg.WriteString("  GlobalKnownHostsFile none\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n")
	cfg.WriteString("  ServerAliveInterval 30\n  ServerAliveCountMax 4\n")
	if err := os.WriteFile(c.config, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.configCurve, []byte(cfg.String()+"  KexAlgorithms curve25519-sha256\n"), 0o600); err != nil {
		return nil, err
	}
	if out, err := runQuiet(ctx, os.Environ(), "ssh", "-F", c.config, "-J", "jump", "target", "true"); err != nil {
		return nil, fmt.Errorf("ssh -J jump target true: %v\n%s\njump log:\n%s\ntarget log:\n%s", err, out, c.jump.logTail(), c.target.logTail())
	}
	return c, nil
}

// startSSHD starts one sshd. Its sessions get SHLVL=1: Debian's bash
// sources ~/.bashrc when sshd runs it (SSH_SOURCE_BASHRC) unless SHLVL
// shows it is not the first shell, and a user's .bashrc is no part of
// SSH's cost (root's runs `pyenv init` on the benchmark machine: 140 ms).
func startSSHD(ctx context.Context, dir, name string) (*sshdProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, name+"_sshd_config")
	body := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/%s_host_key
AuthorizedKeysFile %s/authorized_keys
PidFile none
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
UseDNS no
Subsystem sftp internal-sftp
SetEnv SHLVL=1
`, port, dir, name, dir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	p := &sshdProc{name: name, port: port, exited: make(chan struct{})}
	if p.logFile, err = os.Create(filepath.Join(dir, name+"_sshd.log")); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(sshd, "-D", "-e", "-f", conf)
	p.cmd.Stdout, p.cmd.Stderr = p.logFile, p.logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.logFile.Close()
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			nc.Close()
			logf("sshd %s: pid %d on 127.0.0.1:%d", name, p.cmd.Process.Pid, port)
			return p, nil
		}
		select {
		case <-p.exited:
			p.logFile.Close()
			return nil, fmt.Errorf("sshd %s exited at start (%v):\n%s", name, p.cmd.ProcessState, p.logTail())
		case <-ctx.Done():
			return p, ctx.Err() // the caller stops it
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("sshd %s does not accept connections after 10s:\n%s", name, p.logTail())
		}
	}
}

func (p *sshdProc) logTail() string {
	b, _ := os.ReadFile(p.logFile.Name())
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-20):], "\n")
}

// stop ends sshd (SIGTERM, SIGKILL after 10s). Connections still open
// belong to the per-connection children, which exit when their client
// does.
func (p *sshdProc) stop() error {
	if p == nil {
		return nil
	}
	defer p.logFile.Close()
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("sshd %s did not stop within 10s of SIGTERM: killed", p.name)
	}
}

func (c *chain) stop() error {
	return errors.Join(c.jump.stop(), c.target.stop())
}

type sshPaths struct {
	hangar, openssh, opensshDirect []string
}

// hop is what ssh -v says of one SSH connection.
type hop struct {
	server, kex, hostKey, s2c, c2s string
}

type hopsOf struct {
	path string
	hops []hop
}

// negotiated runs ssh -v ARGS true and lists each connection's server
// and algorithms in order: with ProxyJump, the jump host's connection
// completes before the target's starts.
func negotiated(ctx context.Context, env []string, args []string) ([]hop, error) {
	argv := append([]string{"ssh", "-v"}, args...)
	out, err := runQuiet(ctx, env, append(argv, "true")...)
	if err != nil {
		return nil, fmt.Errorf("%v\n%s", err, out)
	}
	var hops []hop
	cur := func() *hop { return &hops[len(hops)-1] }
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if _, v, ok := strings.Cut(line, "remote software version "); ok {
			hops = append(hops, hop{server: v})
			continue
		}
		if len(hops) == 0 {
			continue
		}
		if v, ok := strings.CutPrefix(line, "debug1: kex: algorithm: "); ok {
			cur().kex = v
		} else if v, ok := strings.CutPrefix(line, "debug1: kex: host key algorithm: "); ok {
			cur().hostKey = v
		} else if v, ok := strings.CutPrefix(line, "debug1: kex: server->client cipher: "); ok {
			cur().s2c = v
		} else if v, ok := strings.CutPrefix(line, "debug1: kex: client->server cipher: "); ok {
			cur().c2s = v
		}
	}
	return hops, nil
}

// countBytes runs ssh ARGS 'head -c n /dev/zero' and counts what arrives.
func countBytes(ctx context.Context, env []string, args []string, n int64) (int64, error) {
	cmd := command(ctx, env, "ssh", append(slices.Clone(args), fmt.Sprintf("head -c %d /dev/zero", n))...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	got, cerr := io.Copy(io.Discard, out)
	if err := errors.Join(cerr, cmd.Wait()); err != nil {
		return got, fmt.Errorf("ssh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return got, nil
}

// xfer is one timed transfer and the CPU time each part of the path used.
type xfer struct {
	wall time.Duration
	cpu  []partCPU
	err  error // the transfer failed
}

type partCPU struct {
	part string
	cpu  time.Duration
}

// transfer runs ssh ARGS with stdout on /dev/null and returns its wall
// time and the client's CPU time (ssh and its ProxyJump child, which it
// reaps).
func transfer(ctx context.Context, env []string, args []string) (time.Duration, time.Duration, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer null.Close()
	cmd := command(ctx, env, "ssh", args...)
	cmd.Stdout = null
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("ssh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	wall := time.Since(t0)
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// hangarTransfer is a transfer through Hangar, with the CPU time of the
// server process (gateway and link server) and of the build's processes.
func hangarTransfer(ctx context.Context, env []string, serverPID int, args []string) (xfer, error) {
	before := treeCPU(serverPID)
	wall, client, err := transfer(ctx, env, args)
	if err != nil {
		return xfer{}, err
	}
	after := treeCPU(serverPID)
	x := xfer{wall: wall, cpu: []partCPU{{"ssh client (both hops)", client}}}
	var server, builder, children, other time.Duration
	for pid, a := range after {
		b, ok := before[pid]
		if !ok {
			b = procTimes{name: a.name}
		}
		d := a.self - b.self
		switch {
		case pid == serverPID:
			server += d
		case a.name == "builder":
			builder += d
		default:
			other += d
		}
		if pid != serverPID {
			children += a.children - b.children
		}
	}
	x.cpu = append(x.cpu,
		partCPU{"hangar server (gateway + link server)", server},
		partCPU{"builder (link client + sshd)", builder},
		partCPU{"remote command and other build processes", children + other})
	return x, nil
}

// chainTransfer is a transfer through the OpenSSH servers, with the CPU
// time of each server's per-connection processes (reaped by the listener).
func chainTransfer(ctx context.Context, env []string, c *chain, viaJump bool, args []string) (xfer, error) {
	j0, _ := procCPU(c.jump.cmd.Process.Pid)
	t0, _ := procCPU(c.target.cmd.Process.Pid)
	wall, client, err := transfer(ctx, env, args)
	if err != nil {
		return xfer{}, err
	}
	// The listener reaps a connection's processes (and adds their CPU
	// time to its children's) a moment after the client has seen the end.
	for range 100 {
		if len(descendants(c.target.cmd.Process.Pid)) == 0 && len(descendants(c.jump.cmd.Process.Pid)) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	j1, _ := procCPU(c.jump.cmd.Process.Pid)
	t1, _ := procCPU(c.target.cmd.Process.Pid)
	x := xfer{wall: wall, cpu: []partCPU{{"ssh client (both hops)", client}}}
	if viaJump {
		x.cpu = append(x.cpu, partCPU{"jump sshd", j1.children - j0.children})
	} else {
		x.cpu[0].part = "ssh client"
	}
	x.cpu = append(x.cpu, partCPU{"target sshd and remote command", t1.children - t0.children})
	return x, nil
}

// procTimes is a process's CPU time: its own and that of its reaped
// children.
type procTimes struct {
	name           string
	self, children time.Duration
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

func procCPU(pid int) (procTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procTimes{}, err
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return procTimes{}, errors.New("bad stat")
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 15 {
		return procTimes{}, errors.New("bad stat")
	}
	n := make([]int64, 4)
	for k := range n {
		n[k], _ = strconv.ParseInt(f[11+k], 10, 64)
	}
	t := procTimes{self: time.Duration(n[0]+n[1]) * clockTick, children: time.Duration(n[2]+n[3]) * clockTick}
	// The build's builder is `hangar builder` (its init is `hangar
	// builder-init` or similar).
	if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		if len(args) > 1 && args[1] == "builder" {
			t.name = "builder"
		} else {
			t.name = filepath.Base(args[0])
		}
	}
	return t, nil
}

// treeCPU is the CPU time of pid and its descendants.
func treeCPU(pid int) map[int]procTimes {
	out := map[int]procTimes{}
	for _, p := range append([]int{pid}, descendants(pid)...) {
		if t, err := procCPU(p); err == nil {
			out[p] = t
		}
	}
	return out
}

type namedXfer struct {
	path string
	x    xfer
}

type sshReport struct {
	driver, gateway, alias, user, load0, load1 string
	n, runs                                    int
	bytes                                      int64
	warm, starts                               []sshStart
	hops                                       []hopsOf
	xfers                                      []namedXfer
	latency                                    map[string][]time.Duration
	latencyErrs                                map[string][]string
}

func mibps(n int64, d time.Duration) float64 {
	return float64(n) / (1 << 20) / d.Seconds()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func msOrDash(d time.Duration) string {
	if d < 0 {
		return "–"
	}
	return ms(d)
}

func (r *sshReport) print(w io.Writer) {
	fmt.Fprintf(w, "\n### SSH: start to first command (%d SSH builds of workflow hold, driver %s, one at a time; times from just before POST /api/v1/builds)\n\n", r.n, r.driver)
	fmt.Fprintln(w, "| milestone | min | median | max | warm-up build |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	rows := []struct {
		name string
		get  func(sshStart) time.Duration
	}{
		{"POST /api/v1/builds answered", func(s sshStart) time.Duration { return s.api }},
		{"build claimed by the runner (started_at)", func(s sshStart) time.Duration { return s.claimed }},
		{"builder's tunnel up (event ssh_tunnel_up)", func(s sshStart) time.Duration { return s.tunnelUp }},
		{"GET /api/v1/builds/{id}/ssh/script answered 200", func(s sshStart) time.Duration { return s.fetched }},
		{"**first `bash script.sh true` exited 0**", func(s sshStart) time.Duration { return s.firstTrue }},
	}
	for _, row := range rows {
		var ds []time.Duration
		for _, s := range r.starts {
			if d := row.get(s); d >= 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			fmt.Fprintf(w, "| %s | – | – | – | – |\n", row.name)
			continue
		}
		st := statsOf(ds)
		warm := ""
		if len(r.warm) > 0 {
			warm = msOrDash(row.get(r.warm[0]))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.name, ms(st.min), ms(st.med), ms(st.max), warm)
	}
	var gets, attempts []int
	var first []time.Duration
	for _, s := range r.starts {
		gets, attempts = append(gets, s.gets), append(attempts, s.attempts)
		first = append(first, s.firstTrue)
	}
	fmt.Fprintf(w, "\nScript requests per build: %v; `bash script.sh true` runs per build: %v.\n", gets, attempts)
	med := statsOf(first).med
	fmt.Fprintf(w, "Goal (median start to first command < 1 s): %s (median %s).\n", verdict(med < time.Second), ms(med))

	fmt.Fprintf(w, "\n### SSH: throughput (%s of /dev/zero to the client's /dev/null, %d runs per path, interleaved)\n\n", humanBytes(r.bytes), r.runs)
	fmt.Fprintf(w, "Hangar: `ssh -F D/config %s 'head -c %d /dev/zero' > /dev/null` (gateway %s). OpenSSH: `ssh -F CHAINCONFIG -J jump target 'head -c %d /dev/zero' > /dev/null`, two `sshd -D` on 127.0.0.1, user %s. OpenSSH direct: the same without `-J jump`.\n\n", r.alias, r.bytes, r.gateway, r.bytes, r.user)
	fmt.Fprintf(w, "| path | runs (s) | median MiB/s |")
	fmt.Fprintln(w, " CPU s per GiB (median), by part |")
	fmt.Fprintln(w, "|---|---|---:|---|")
	rates := map[string]float64{}
	for _, path := range []string{"hangar", "openssh", "openssh-direct"} {
		var secs []string
		var mbs []float64
		cpu := map[string][]float64{}
		var order []string
		for _, nx := range r.xfers {
			if nx.path != path {
				continue
			}
			if nx.x.err != nil {
				secs = append(secs, "FAILED")
				continue
			}
			secs = append(secs, strconv.FormatFloat(nx.x.wall.Seconds(), 'f', 2, 64))
			mbs = append(mbs, mibps(r.bytes, nx.x.wall))
			for _, p := range nx.x.cpu {
				if _, ok := cpu[p.part]; !ok {
					order = append(order, p.part)
				}
				cpu[p.part] = append(cpu[p.part], p.cpu.Seconds()*float64(1<<30)/float64(r.bytes))
			}
		}
		if len(mbs) == 0 {
			if len(secs) > 0 {
				fmt.Fprintf(w, "| %s | %s | – | – |\n", path, strings.Join(secs, ", "))
			}
			continue
		}
		rates[path] = median(mbs)
		var cs []string
		var total float64
		for _, part := range order {
			m := median(cpu[part])
			total += m
			cs = append(cs, fmt.Sprintf("%s %.2f", part, m))
		}
		cs = append(cs, fmt.Sprintf("**total %.2f**", total))
		fmt.Fprintf(w, "| %s | %s | **%.0f** | %s |\n", path, strings.Join(secs, ", "), rates[path], strings.Join(cs, "; "))
	}
	for _, nx := range r.xfers {
		if nx.x.err != nil {
			fmt.Fprintf(w, "\nFAILED %s transfer: %s\n", nx.path, strings.ReplaceAll(strings.TrimSpace(nx.x.err.Error()), "\n", "\n    "))
		}
	}
	if rates["openssh"] > 0 && rates["hangar"] > 0 {
		ratio := rates["hangar"] / rates["openssh"]
		fmt.Fprintf(w, "\nRatio hangar / openssh (-J) throughput: **%.2f** (goal ≥ 1.0: %s).\n", ratio, verdict(ratio >= 1))
	}
	fmt.Fprintln(w, "\nNegotiated algorithms (from `ssh -v`; the client is OpenSSH's in every hop it makes):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | hop | server | kex | server→client cipher | client→server cipher |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, h := range r.hops {
		for i, hp := range h.hops {
			name := "target (end-to-end)"
			if len(h.hops) > 1 && i == 0 {
				name = "jump (outer)"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", h.path, name, hp.server, hp.kex, hp.s2c, hp.c2s)
		}
	}

	fmt.Fprintf(w, "\n### SSH: connect latency (run of `true` on a ready build, %d runs of each, interleaved)\n\n", r.n)
	fmt.Fprintln(w, "| command | min | median | max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	labels := []struct{ key, label string }{
		{"hangar script", "**hangar: `bash script.sh true`**"},
		{"openssh -J", "**openssh: `ssh -F CHAINCONFIG -J jump target true`**"},
		{"hangar ssh -F", "hangar: `ssh -F D/config " + r.alias + " true` (no script)"},
		{"openssh direct", "openssh: `ssh -F CHAINCONFIG target true` (no jump)"},
		{"openssh -J curve25519", "openssh: `-J jump target true`, both hops `KexAlgorithms curve25519-sha256` (Hangar's kex)"},
	}
	meds := map[string]time.Duration{}
	for _, l := range labels {
		ds := r.latency[l.key]
		if len(ds) == 0 {
			continue
		}
		st := statsOf(ds)
		meds[l.key] = st.med
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", l.label, ms(st.min), ms(st.med), ms(st.max))
	}
	for _, l := range labels {
		if errs := r.latencyErrs[l.key]; len(errs) > 0 {
			fmt.Fprintf(w, "\n%s: %d of %d runs FAILED, first: %s\n", l.key, len(errs), r.n, firstLine(errors.New(errs[0])))
		}
	}
	if o := meds["openssh -J"]; o > 0 && meds["hangar script"] > 0 {
		ratio := float64(meds["hangar script"]) / float64(o)
		fmt.Fprintf(w, "\nRatio hangar script / openssh -J (medians): **%.2f** (goal ≤ 1.1: %s).\n", ratio, verdict(ratio <= 1.1))
	}
	fmt.Fprintf(w, "\nMachine: %d CPUs; load average (1/5/15 min) %s at the start, %s at the end.\n", runtime.NumCPU(), r.load0, r.load1)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func humanBytes(n int64) string {
	if n%(1<<30) == 0 {
		return strconv.FormatInt(n>>30, 10) + " GiB"
	}
	if n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
