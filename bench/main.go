// Command bench measures Hangar's build start latency and the memory of
// `hangar server` with many builds in flight, for the sandbox and the host
// machine drivers. It builds the hangar binary, makes a bare git repository
// holding a codemagic.yaml, starts one `hangar server` per driver on a free
// loopback port with its own temporary data directory, and drives it through
// the REST API. Results are printed as Markdown tables on stdout; progress
// goes to stderr.
//
//	go run ./bench [-driver sandbox|host|both] [-n 10] [-inflight 10]
//	go run ./bench -mode ssh [-driver sandbox] [-n 10] [-runs 3]
//	go run ./bench -mode logs [-driver sandbox] [-runs 3] [-parallel 4]
//	go run ./bench -mode webhook [-posts 40] [-hookbytes 25165824]
//
// The webhook mode (webhook.go) measures the server's memory under
// unverified webhook deliveries.
// The logs mode (logs.go) measures a step that prints 1,000,000 lines.
// The ssh mode (ssh.go) measures SSH builds against OpenSSH instead.
//
// The sandbox driver needs root and runc. See docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/build"
)

// The sandbox server gets its own bridge and subnet so that it never
// collides with another Hangar server on this machine.
const (
	sandboxBridge = "hgbench0"
	sandboxSubnet = "10.213.88.0/24"
	appName       = "bench"
)

// workflowFile is the codemagic.yaml of the benchmark's repository.
const workflowFile = `workflows:
  quick:
    scripts:
      - name: first
        script: echo first
  hold:
    max_build_duration: "60s"
    scripts:
      - name: hold
        script: sleep 20
`

// The sandbox servers' image store and image (flags -images and -image).
var sandboxImages, sandboxImage string

type options struct {
	drivers   []string
	n         int
	warmup    int
	inflight  int
	poll      time.Duration
	settle    time.Duration
	keep      bool
	runs      int   // ssh mode: timed transfers per path; logs mode: builds one at a time
	parallel  int   // logs mode: builds at once
	bytes     int64 // ssh mode: bytes per transfer
	posts     int   // webhook mode: parallel posts
	hookBytes int64 // webhook mode: bytes per post
}

func main() {
	var o options
	mode := flag.String("mode", "start", "start: start latency and memory; ssh: SSH start, throughput and connect latency against OpenSSH; logs: a verbose step's speed and lines; webhook: server memory under bad-signature webhook posts")
	driver := flag.String("driver", "both", "machine driver to measure: sandbox, host or both (ssh and logs modes: one, default sandbox)")
	flag.IntVar(&o.n, "n", 10, "sequential builds of the start-latency run (ssh mode: SSH builds, and runs of each connect-latency command)")
	flag.IntVar(&o.warmup, "warmup", 1, "builds run (and shown apart) before the start-latency run")
	flag.IntVar(&o.inflight, "inflight", 10, "builds in flight at once in the memory run")
	flag.DurationVar(&o.poll, "poll", 10*time.Millisecond, "interval of GET /api/v1/builds/{id} while waiting")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "how long the memory run samples once every build runs its step")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binary, repository, data dirs, server logs)")
	flag.IntVar(&o.runs, "runs", 3, "ssh mode: timed transfers per path; logs mode: verbose builds one at a time")
	flag.IntVar(&o.parallel, "parallel", 4, "logs mode: verbose builds at once")
	flag.Int64Var(&o.bytes, "bytes", 1<<30, "ssh mode: bytes per transfer")
	flag.IntVar(&o.posts, "posts", 40, "webhook mode: parallel posts with a bad signature")
	flag.Int64Var(&o.hookBytes, "hookbytes", 24<<20, "webhook mode: bytes per post")
	flag.StringVar(&sandboxImages, "images", "hangar-data/images", "sandbox: the image store the servers boot machines from (make run builds the default image in it)")
	flag.StringVar(&sandboxImage, "image", "hangar/default:latest", "sandbox: the image machines boot from (it must be in -images: see hangar image)")
	flag.Parse()
	if *mode == "ssh" || *mode == "logs" {
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "driver" })
		if !set {
			*driver = "sandbox"
		}
	}
	switch *driver {
	case "sandbox", "host":
		o.drivers = []string{*driver}
	case "both":
		o.drivers = []string{"sandbox", "host"}
	default:
		fatalf("-driver %q: use sandbox, host or both", *driver)
	}
	if o.parallel < 1 {
		fatalf("-parallel must be at least 1")
	}
	if o.n < 1 || o.inflight < 1 || o.warmup < 0 || o.poll <= 0 || o.runs < 1 || o.bytes < 1 {
		fatalf("-n, -inflight, -runs and -bytes must be at least 1, -warmup at least 0, -poll positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch *mode {
	case "start":
		err = run(ctx, o)
	case "ssh":
		err = runSSH(ctx, o)
	case "logs":
		err = runLogs(ctx, o)
	case "webhook":
		err = runWebhook(ctx, o)
	default:
		err = fmt.Errorf("-mode %q: use start, ssh, logs or webhook", *mode)
	}
	stop()
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// result is what one driver gave.
type result struct {
	driver  string
	err     error
	warmup  []sample
	samples []sample
	mem     *memResult
}

// removeTemp removes a run's temporary directory (unless -keep), adding a
// failure to *err.
func removeTemp(o options, tmp string, err *error) {
	if o.keep {
		logf("kept %s", tmp)
		return
	}
	if rerr := os.RemoveAll(tmp); rerr != nil {
		*err = errors.Join(*err, fmt.Errorf("remove temporary directory: %w", rerr))
	}
}

func run(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "hangar-bench-")
	if err != nil {
		return err
	}
	defer removeTemp(o, tmp, &err)

	logf("building the hangar binary")
	bin, err := buildBinary(ctx, filepath.Join(tmp, "bin"))
	if err != nil {
		return err
	}
	logf("making the repository")
	repo, err := makeRepo(ctx, filepath.Join(tmp, "git"), workflowFile)
	if err != nil {
		return err
	}

	load0 := loadavg()
	var results []*result
	for _, d := range o.drivers {
		if ctx.Err() != nil {
			break
		}
		r := &result{driver: d}
		r.err = benchDriver(ctx, o, bin, repo, filepath.Join(tmp, d), r)
		if r.err != nil {
			logf("%s: %v", d, r.err)
		}
		results = append(results, r)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	printReport(os.Stdout, o, results)
	fmt.Fprintf(os.Stdout, "Machine: %d CPUs; load average (1/5/15 min) %s at the start, %s at the end.\n", runtime.NumCPU(), load0, loadavg())
	for _, r := range results {
		if r.err != nil {
			return fmt.Errorf("driver %s failed (see above)", r.driver)
		}
	}
	return nil
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// moduleRoot is the directory of the go.mod that `go` sees from here.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the hangar module: run `go run ./bench` from the repository")
	}
	return filepath.Dir(mod), nil
}

func buildBinary(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hangar")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/hangar")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hangar: %v\n%s", err, out)
	}
	return bin, nil
}

// makeRepo makes a bare repository whose branch main holds the
// codemagic.yaml yml.
func makeRepo(ctx context.Context, dir, yml string) (string, error) {
	work := filepath.Join(dir, "work")
	bare := filepath.Join(dir, "repo.git")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(work, "codemagic.yaml"), []byte(yml), 0o644); err != nil {
		return "", err
	}
	git := func(dir string, args ...string) error {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, args := range [][]string{
		{"init", "--quiet", "--initial-branch", "main"},
		{"add", "codemagic.yaml"},
		{"-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "--quiet", "-m", "bench workflows"},
		{"clone", "--quiet", "--bare", work, bare},
	} {
		if err := git(work, args...); err != nil {
			return "", err
		}
	}
	return bare, nil
}

// server is a running `hangar server`.
type server struct {
	driver  string
	url     string
	token   string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	exited  chan struct{}
	api     *api.Client // set once the server answers
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startServer(ctx context.Context, bin, driver, dir string, maxBuilds int) (*server, error) {
	if driver == "sandbox" && os.Geteuid() != 0 {
		return nil, errors.New("the sandbox driver needs root")
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The SSH gateway listens on a free loopback port, not the default :2222.
	args := []string{"server", "--http", addr, "--data", data, "--driver", driver, "--max-builds", strconv.Itoa(maxBuilds), "--ssh", "127.0.0.1:0"}
	if driver == "sandbox" {
		images, err := filepath.Abs(sandboxImages)
		if err != nil {
			return nil, err
		}
		args = append(args, "--sandbox-bridge", sandboxBridge, "--sandbox-subnet", sandboxSubnet,
			"--images", images, "--default-image", sandboxImage)
	}
	s := &server{
		driver:  driver,
		url:     "http://" + addr,
		logPath: filepath.Join(dir, "server.log"),
		exited:  make(chan struct{}),
	}
	if s.logFile, err = os.Create(s.logPath); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = s.logFile
	s.cmd.Stderr = s.logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.logFile.Close()
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Timeout: 30 * time.Second}
	for {
		if api.New(s.url, "", hc).Health(ctx) == nil {
			break
		}
		select {
		case <-s.exited:
			s.logFile.Close()
			return nil, fmt.Errorf("hangar server --driver %s exited at start (%v):\n%s", driver, s.cmd.ProcessState, s.logTail(40))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("hangar server --driver %s did not answer within 60s:\n%s", driver, s.logTail(40))
		}
	}
	tok, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("admin token: %w", err)
	}
	s.token = strings.TrimSpace(string(tok))
	s.api = api.New(s.url, s.token, hc)
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// logTail is the end of the server's log.
func (s *server) logTail(lines int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// stop sends SIGTERM and waits for the server to exit (SIGKILL after 60s).
func (s *server) stop() error {
	defer s.logFile.Close()
	select {
	case <-s.exited:
		return nil
	default:
	}
	t0 := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		logf("%s: server stopped %v after SIGTERM (%v)", s.driver, time.Since(t0).Round(time.Millisecond), s.cmd.ProcessState)
		return nil
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("hangar server did not stop within 60s of SIGTERM: killed")
	}
}

// startWithApp starts a server and adds the benchmark's app, whose
// repository is repo.
func startWithApp(ctx context.Context, bin, driver, dir string, maxBuilds int, repo string) (*server, error) {
	logf("%s: starting hangar server", driver)
	s, err := startServer(ctx, bin, driver, dir, maxBuilds)
	if err != nil {
		return nil, err
	}
	logf("%s: server pid %d at %s", driver, s.pid(), s.url)
	if _, err := s.api.AddApp(ctx, api.AppRequest{Name: appName, Repo: repo}); err != nil {
		err = fmt.Errorf("add app: %w", err)
		s.finish(&err)
		return nil, err
	}
	return s, nil
}

// finish stops the server, adding a failure to *err, and the end of the
// server's log to any error.
func (s *server) finish(err *error) {
	if serr := s.stop(); serr != nil {
		*err = errors.Join(*err, serr)
	}
	if s.driver == "sandbox" {
		if _, serr := os.Stat("/sys/class/net/" + sandboxBridge); serr == nil {
			logf("sandbox: note: bridge %s still exists after the server stopped", sandboxBridge)
		}
	}
	if *err != nil {
		*err = fmt.Errorf("%w\nserver log (end):\n%s", *err, s.logTail(30))
	}
}

// holding reports whether b is building and runs its first script.
func holding(b *build.Build) bool {
	return b.Status == build.Building && len(b.Steps) > 2 && b.Steps[2].Status == build.StepRunning
}

func (s *server) startBuild(ctx context.Context, workflow string) (*build.Build, error) {
	b, err := s.api.StartBuild(ctx, api.StartRequest{App: appName, Workflow: workflow})
	if err != nil {
		return nil, fmt.Errorf("start build of %s: %w", workflow, err)
	}
	return b, nil
}

func (s *server) getBuild(ctx context.Context, id int64) (*build.Build, error) {
	b, err := s.api.Build(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get build %d: %w", id, err)
	}
	return b, nil
}

// waitBuild polls build id until cond holds for it, the build ends, or
// timeout passes.
func (s *server) waitBuild(ctx context.Context, id int64, poll, timeout time.Duration, cond func(*build.Build) bool) (*build.Build, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := s.getBuild(ctx, id)
		if err != nil {
			return nil, err
		}
		if cond(b) || b.Status.Done() {
			return b, nil
		}
		if time.Now().After(deadline) {
			return b, fmt.Errorf("build %d still %s after %v", id, b.Status, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func benchDriver(ctx context.Context, o options, bin, repo, dir string, r *result) (err error) {
	s, err := startWithApp(ctx, bin, r.driver, dir, max(o.inflight, 1), repo)
	if err != nil {
		return err
	}
	defer s.finish(&err)

	for i := 0; i < o.warmup+o.n; i++ {
		smp, err := latencyOnce(ctx, s, o.poll)
		if err != nil {
			return err
		}
		if i < o.warmup {
			r.warmup = append(r.warmup, smp)
			logf("%s: warm-up build: first step running after %v", r.driver, ms(smp.first))
			continue
		}
		r.samples = append(r.samples, smp)
		logf("%s: build %d/%d: machine ready %v, first step running %v, ended %v", r.driver, i-o.warmup+1, o.n, ms(smp.ready), ms(smp.first), ms(smp.total))
	}

	r.mem, err = memoryRun(ctx, s, o)
	return err
}

// sample is one build of the start-latency run. Every duration is from t0,
// taken just before POST /api/v1/builds, to a time the server recorded
// (same machine clock; the server keeps milliseconds).
type sample struct {
	api     time.Duration // POST /api/v1/builds answered (client clock)
	claimed time.Duration // the runner claimed the build (build started_at)
	ready   time.Duration // steps[0] "Preparing build machine" finished
	fetched time.Duration // steps[1] "Fetching app sources" finished
	first   time.Duration // steps[2], the first script, started
	total   time.Duration // the build ended (build finished_at)
}

func latencyOnce(ctx context.Context, s *server, poll time.Duration) (sample, error) {
	t0 := time.Now()
	b, err := s.startBuild(ctx, "quick")
	if err != nil {
		return sample{}, err
	}
	api := time.Since(t0)
	b, err = s.waitBuild(ctx, b.ID, poll, 2*time.Minute, func(*build.Build) bool { return false })
	if err != nil {
		return sample{}, err
	}
	if b.Status != build.Finished {
		return sample{}, fmt.Errorf("build %d of quick ended %s: %s", b.ID, b.Status, b.Message)
	}
	if len(b.Steps) < 3 || b.StartedAt == nil || b.FinishedAt == nil {
		return sample{}, fmt.Errorf("build %d: want started_at, finished_at and 3 steps, got %+v", b.ID, b)
	}
	for i, st := range b.Steps[:3] {
		if st.StartedAt == nil || st.FinishedAt == nil {
			return sample{}, fmt.Errorf("build %d: step %d (%s) has no start or end time", b.ID, i, st.Name)
		}
	}
	return sample{
		api:     api,
		claimed: b.StartedAt.Sub(t0),
		ready:   b.Steps[0].FinishedAt.Sub(t0),
		fetched: b.Steps[1].FinishedAt.Sub(t0),
		first:   b.Steps[2].StartedAt.Sub(t0),
		total:   b.FinishedAt.Sub(t0),
	}, nil
}

// memResult is what the memory run measured.
type memResult struct {
	inflight    int
	idleRSS     int64 // server VmRSS before the builds, KiB
	hwmReset    bool  // VmHWM was reset before the builds
	peakHWM     int64 // largest server VmHWM read, KiB (the kernel updates it lazily: see sample)
	peakRSS     int64 // largest sampled server VmRSS, KiB
	peakDescRSS int64 // largest sampled sum of VmRSS of the server's descendants, KiB
	peakDescN   int   // descendants at that sample
	peakPSS     int64 // largest sampled Pss of server + descendants, KiB
	allRunning  time.Duration
	cancel      time.Duration
	samples     int
}

func memoryRun(ctx context.Context, s *server, o options) (_ *memResult, err error) {
	pid := s.pid()
	m := &memResult{inflight: o.inflight}
	st, err := procStatus(pid)
	if err != nil {
		return nil, err
	}
	m.idleRSS = st["VmRSS"]
	// Writing 5 to clear_refs resets VmHWM to the current RSS, so that the
	// peak is that of this run, not of the server's whole life.
	m.hwmReset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil

	stopSampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			m.sample(pid)
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopSampling)
			sampled.Wait()
			if st, err := procStatus(pid); err == nil {
				m.peakHWM = max(m.peakHWM, st["VmHWM"])
			}
		}
	}
	defer stop()

	logf("%s: starting %d hold builds at once", s.driver, o.inflight)
	t0 := time.Now()
	ids := make([]int64, o.inflight)
	errs := make([]error, o.inflight)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.startBuild(ctx, "hold")
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = b.ID
		}()
	}
	wg.Wait()
	// Whatever happens next, cancel what was started.
	canceled := false
	defer func() {
		if canceled {
			return
		}
		cctx := context.WithoutCancel(ctx) // also on ^C
		if cerr := cancelAll(cctx, s, ids, o.poll); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i, id := range ids {
		errs[i] = nil
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.waitBuild(ctx, id, 50*time.Millisecond, 2*time.Minute, holding)
			if err == nil && !holding(b) {
				err = fmt.Errorf("build %d ended (%s: %s) before all %d builds ran their step", id, b.Status, b.Message, len(ids))
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.allRunning = time.Since(t0)
	logf("%s: all %d builds run their step after %v; sampling for %v", s.driver, len(ids), ms(m.allRunning), o.settle)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.settle):
	}
	// Every build must still be running, or the figures undercount.
	for _, id := range ids {
		b, err := s.getBuild(ctx, id)
		if err != nil {
			return nil, err
		}
		if !holding(b) {
			return nil, fmt.Errorf("build %d is %s, no longer running its step, at the end of the sampling", id, b.Status)
		}
	}
	stop()

	t1 := time.Now()
	canceled = true
	if err := cancelAll(ctx, s, ids, o.poll); err != nil {
		return nil, err
	}
	m.cancel = time.Since(t1)
	logf("%s: canceled all builds in %v", s.driver, ms(m.cancel))
	return m, nil
}

// cancelAll cancels builds ids at once and waits until they have ended.
// Builds already ended are left as they are.
func cancelAll(ctx context.Context, s *server, ids []int64, poll time.Duration) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		if id == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.api.CancelBuild(ctx, id)
			if api.StatusOf(err) == http.StatusConflict {
				err = nil // already ended
			}
			if err != nil {
				errs[i] = fmt.Errorf("cancel build %d: %w", id, err)
				return
			}
			_, errs[i] = s.waitBuild(ctx, id, poll, time.Minute, func(*build.Build) bool { return false })
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sample reads the memory of the server and its descendants once. VmHWM
// is max(recorded high-water mark, current RSS) when read, and the kernel
// records the mark only at some events (unmaps, exit), so the largest VmHWM
// read is the peak: a read of VmHWM at the end alone can be below an RSS
// sampled earlier.
func (m *memResult) sample(pid int) {
	st, err := procStatus(pid)
	if err != nil {
		return
	}
	m.samples++
	m.peakRSS = max(m.peakRSS, st["VmRSS"])
	m.peakHWM = max(m.peakHWM, st["VmHWM"])
	desc := descendants(pid)
	var rss int64
	pss := pssOf(pid)
	for _, p := range desc {
		if s, err := procStatus(p); err == nil {
			rss += s["VmRSS"] // kernel threads and zombies have none
		}
		pss += pssOf(p)
	}
	if rss > m.peakDescRSS {
		m.peakDescRSS, m.peakDescN = rss, len(desc)
	}
	m.peakPSS = max(m.peakPSS, pss)
}

// procStatus reads the kB fields of /proc/PID/status.
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out, sc.Err()
}

// pssOf is the proportional set size of pid in KiB (0 if unknown): shared
// pages (the hangar binary the server and host builders share, libraries)
// count once in a sum over processes, unlike RSS.
func pssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				n, _ := strconv.ParseInt(fields[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// descendants lists the processes below pid (children, their children...).
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces: the
		// fields after the last ')' are state, ppid, ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		children[pp] = append(children[pp], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// stats is min, median and max.
type stats struct{ min, med, max time.Duration }

func statsOf(ds []time.Duration) stats {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stats{s[0], med, s[n-1]}
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64) + " ms"
}

func mib(kib int64) string {
	return strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64) + " MiB"
}

// phases are the rows of the latency table.
var phases = []struct {
	name string
	get  func(sample) time.Duration
}{
	{"POST /api/v1/builds answered", func(s sample) time.Duration { return s.api }},
	{"build claimed by the runner", func(s sample) time.Duration { return s.claimed }},
	{"machine ready (steps[0] finished)", func(s sample) time.Duration { return s.ready }},
	{"sources fetched (steps[1] finished)", func(s sample) time.Duration { return s.fetched }},
	{"**first step running (steps[2] started)**", func(s sample) time.Duration { return s.first }},
	{"build ended (finished_at)", func(s sample) time.Duration { return s.total }},
}

// spans are the rows of the phase table: the time between two milestones
// of the same build.
var spans = []struct {
	name string
	get  func(sample) time.Duration
}{
	{"t0 → claimed (API: mirror fetch, workflow parse, queue; runner claim)", func(s sample) time.Duration { return s.claimed }},
	{"claimed → machine ready (start machine, builder links up)", func(s sample) time.Duration { return s.ready - s.claimed }},
	{"machine ready → sources fetched (steps[1])", func(s sample) time.Duration { return s.fetched - s.ready }},
	{"sources fetched → first step running", func(s sample) time.Duration { return s.first - s.fetched }},
	{"first step running → build ended", func(s sample) time.Duration { return s.total - s.first }},
}

func printReport(w io.Writer, o options, results []*result) {
	fmt.Fprintf(w, "\n### Start latency (%d sequential builds of workflow quick, times from just before POST /api/v1/builds)\n\n", o.n)
	fmt.Fprintln(w, "| driver | milestone | min | median | max | warm-up build |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, r := range results {
		if len(r.samples) == 0 {
			fmt.Fprintf(w, "| %s | failed: %s | | | | |\n", r.driver, firstLine(r.err))
			continue
		}
		for _, p := range phases {
			var ds []time.Duration
			for _, s := range r.samples {
				ds = append(ds, p.get(s))
			}
			st := statsOf(ds)
			warm := ""
			if len(r.warmup) > 0 {
				warm = ms(p.get(r.warmup[0]))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.driver, p.name, ms(st.min), ms(st.med), ms(st.max), warm)
		}
	}
	for _, r := range results {
		if len(r.samples) > 0 && len(r.samples) < o.n {
			fmt.Fprintf(w, "\n%s: INCOMPLETE, only %d of %d builds before the run failed: %s\n", r.driver, len(r.samples), o.n, firstLine(r.err))
		}
	}
	fmt.Fprintln(w, "\nPhases (median over the same builds of each phase's own duration):")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| phase |")
	for _, r := range results {
		fmt.Fprintf(w, " %s |", r.driver)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---:|", len(results)))
	for _, sp := range spans {
		fmt.Fprintf(w, "| %s |", sp.name)
		for _, r := range results {
			if len(r.samples) == 0 {
				fmt.Fprint(w, " – |")
				continue
			}
			var ds []time.Duration
			for _, s := range r.samples {
				ds = append(ds, sp.get(s))
			}
			fmt.Fprintf(w, " %s |", ms(statsOf(ds).med))
		}
		fmt.Fprintln(w)
	}
	for _, r := range results {
		if r.driver == "sandbox" && len(r.samples) > 0 {
			var ds []time.Duration
			for _, s := range r.samples {
				ds = append(ds, s.first)
			}
			med := statsOf(ds).med
			verdict := "met"
			if med >= 500*time.Millisecond {
				verdict = "NOT met"
			}
			if len(r.samples) < o.n {
				verdict += " (incomplete run)"
			}
			fmt.Fprintf(w, "\nGoal (sandbox, median start to first step running < 500 ms): %s (median %s).\n", verdict, ms(med))
		}
	}

	fmt.Fprintf(w, "\n### Memory (%d builds of workflow hold in flight, each running `sleep 20`)\n\n", o.inflight)
	fmt.Fprintln(w, "| driver | server VmRSS idle | server peak VmHWM | server peak VmRSS | descendants peak RSS (sum) | server + descendants peak PSS | all running after | cancel all |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		m := r.mem
		if m == nil {
			fmt.Fprintf(w, "| %s | failed: %s | | | | | | |\n", r.driver, firstLine(r.err))
			continue
		}
		hwm := mib(m.peakHWM)
		if !m.hwmReset {
			hwm += " (lifetime)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s (%d procs) | %s | %s | %s |\n", r.driver, mib(m.idleRSS), hwm, mib(m.peakRSS),
			mib(m.peakDescRSS), m.peakDescN, mib(m.peakPSS), ms(m.allRunning), ms(m.cancel))
	}
	fmt.Fprintln(w)
}

func firstLine(err error) string {
	if err == nil {
		return "no result"
	}
	l, _, _ := strings.Cut(err.Error(), "\n")
	if r := []rune(l); len(r) > 160 {
		l = string(r[:160]) + "…"
	}
	return strings.ReplaceAll(l, "|", "\\|")
}
