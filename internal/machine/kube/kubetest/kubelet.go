package kubetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// NodeName is the node the stand-in kubelet binds Pods to.
const NodeName = "kubetest-node"

// Kubelet plays the scheduler's and the kubelet's parts for the Pods of
// one namespace: it binds each new Pod to NodeName, runs its init
// containers and then its containers as host processes (the test binary
// re-executed, see Main, in new mount, PID and UTS namespaces, chrooted
// into a root made of the host's directories read-only, the image's files
// and the Pod's volumes), reports their states and the Pod's phase to the
// API server, and, when a Pod is deleted, stops its processes (SIGTERM,
// SIGKILL after the grace period) and removes the Pod, as a kubelet does.
//
// Each container runs in cgroups of its own (v1 memory and cpu, where the
// host has them: see Limits) with its memory and CPU limits, so a
// container that exceeds its memory is OOM-killed (reason OOMKilled) and
// one that spins is throttled to its CPUs. It does not enforce requests,
// ephemeral-storage, runtime classes or NetworkPolicies, pulls no image
// (an image is Images' files over the host's root; others fail with
// ErrImagePull) and serves no logs. Volumes: emptyDir, secret and
// persistentVolumeClaim (Claims), with subPath.
type Kubelet struct {
	Client    kubernetes.Interface
	Namespace string
	// Images are the images it can run: reference -> files (path in the
	// image -> file on the host).
	Images map[string]map[string]string
	// Claims map PersistentVolumeClaim names to host directories.
	Claims map[string]string
	// Output takes the containers' output (may be nil).
	Output io.Writer
	// OnStart, if set, is called with each Pod before its containers run.
	OnStart func(*corev1.Pod)

	dir  string
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup // one per Pod being run
	// cg makes the containers' cgroups; nil: their limits are not
	// enforced, for the reason noLimits.
	cg       *cgroups
	noLimits string

	mu   sync.Mutex
	pods map[types.UID]*podRun // guarded by mu

	// statusMu guards the PodStatus that run and its containers'
	// goroutines share (one per Pod, written in place).
	statusMu sync.Mutex
}

// podRun is one Pod being run.
type podRun struct {
	killOnce sync.Once
	kill     chan struct{} // closed when the Pod is being deleted
}

func (p *podRun) requestKill() { p.killOnce.Do(func() { close(p.kill) }) }

// Start starts the kubelet; at cleanup it stops every container and waits
// for them.
func (k *Kubelet) Start(t testing.TB) {
	t.Helper()
	k.dir = t.TempDir()
	k.pods = map[types.UID]*podRun{}
	cg, why, err := newCgroups()
	if err != nil {
		t.Fatal(err)
	}
	k.cg, k.noLimits = cg, why
	if cg == nil {
		t.Logf("stand-in kubelet: the containers' limits are not enforced: %s", why)
	}
	k.ctx, k.stop = context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactoryWithOptions(k.Client, 0, informers.WithNamespace(k.Namespace))
	inf := factory.Core().V1().Pods().Informer()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.handle(t, obj) },
		UpdateFunc: func(_, obj any) { k.handle(t, obj) },
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(k.ctx.Done())
	t.Cleanup(func() {
		k.stop()
		factory.Shutdown()
		k.mu.Lock()
		for _, p := range k.pods {
			p.requestKill()
		}
		k.mu.Unlock()
		k.wg.Wait()
		if k.cg != nil {
			if err := k.cg.close(); err != nil {
				t.Error(err)
			}
		}
	})
	if !cache.WaitForCacheSync(k.ctx.Done(), inf.HasSynced) {
		t.Fatal("stand-in kubelet: no Pod list")
	}
}

// Limits reports whether the containers run under their memory and CPU
// limits, and if not, why.
func (k *Kubelet) Limits() (bool, string) { return k.cg != nil, k.noLimits }

// Running reports how many Pods have containers running or to run.
func (k *Kubelet) Running() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.pods)
}

func (k *Kubelet) handle(t testing.TB, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || k.ctx.Err() != nil {
		return
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil {
			k.bind(t, pod)
		}
		return
	}
	if pod.Spec.NodeName != NodeName {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.pods[pod.UID]
	if p == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp != nil {
				// Ended before this kubelet started: just remove it.
				k.deletePod(t, pod)
			}
			return
		}
		p = &podRun{kill: make(chan struct{})}
		k.pods[pod.UID] = p
		k.wg.Add(1)
		go k.run(t, pod.DeepCopy(), p)
	}
	if pod.DeletionTimestamp != nil {
		p.requestKill()
	}
}

// bind does the scheduler's part.
func (k *Kubelet) bind(t testing.TB, pod *corev1.Pod) {
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
	}
	err := k.Client.CoreV1().Pods(pod.Namespace).Bind(k.ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && k.ctx.Err() == nil {
		t.Logf("stand-in kubelet: bind %s: %v", pod.Name, err)
	}
}

// deletePod removes a Pod whose containers have all stopped.
func (k *Kubelet) deletePod(t testing.TB, pod *corev1.Pod) {
	uid := pod.UID
	err := k.Client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name,
		metav1.DeleteOptions{GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		t.Logf("stand-in kubelet: delete %s: %v", pod.Name, err)
	}
}

// run runs one Pod to its end, then waits for its deletion and removes it.
func (k *Kubelet) run(t testing.TB, pod *corev1.Pod, p *podRun) {
	defer k.wg.Done()
	defer func() {
		k.mu.Lock()
		delete(k.pods, pod.UID)
		k.mu.Unlock()
	}()
	if k.OnStart != nil {
		k.OnStart(pod.DeepCopy())
	}
	dir := filepath.Join(k.dir, string(pod.UID))
	defer os.RemoveAll(dir)
	st := &corev1.PodStatus{Phase: corev1.PodPending}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, waiting(c, "PodInitializing", ""))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, waiting(c, "PodInitializing", ""))
	}
	k.report(t, pod, st)

	ended := func() {
		<-p.kill
		k.deletePod(t, pod)
	}
	vols, err := k.volumes(pod, dir)
	if err != nil {
		for i := range st.ContainerStatuses {
			st.ContainerStatuses[i].State.Waiting.Reason = "CreateContainerConfigError"
			st.ContainerStatuses[i].State.Waiting.Message = err.Error()
		}
		k.report(t, pod, st)
		ended()
		return
	}
	failed := false
	for i, c := range pod.Spec.InitContainers {
		if !k.runContainer(t, pod, c, vols, dir, p, st, &st.InitContainerStatuses[i]) {
			failed = true
			break
		}
	}
	if !failed {
		st.Phase = corev1.PodRunning
		var wg sync.WaitGroup
		var mu sync.Mutex // guards failed
		for i, c := range pod.Spec.Containers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !k.runContainer(t, pod, c, vols, dir, p, st, &st.ContainerStatuses[i]) {
					mu.Lock()
					failed = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	if notStarted(st) {
		// An image it cannot pull: the Pod waits until it is deleted.
		ended()
		return
	}
	st.Phase = corev1.PodSucceeded
	if failed {
		st.Phase = corev1.PodFailed
	}
	k.report(t, pod, st)
	ended()
}

func notStarted(st *corev1.PodStatus) bool {
	for _, s := range append(append([]corev1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...) {
		if s.State.Waiting != nil && s.State.Waiting.Reason == "ErrImagePull" {
			return true
		}
	}
	return false
}

func waiting(c corev1.Container, reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: c.Name, Image: c.Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

// report writes st as the Pod's status.
func (k *Kubelet) report(t testing.TB, pod *corev1.Pod, st *corev1.PodStatus) {
	k.statusMu.Lock()
	want := st.DeepCopy()
	k.statusMu.Unlock()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.Client.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != pod.UID {
			return nil
		}
		cur.Status.Phase = want.Phase
		cur.Status.InitContainerStatuses = want.InitContainerStatuses
		cur.Status.ContainerStatuses = want.ContainerStatuses
		_, err = k.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Logf("stand-in kubelet: status of %s: %v", pod.Name, err)
	}
}

// volumes makes the Pod's volumes and returns their host directories.
func (k *Kubelet) volumes(pod *corev1.Pod, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		path := filepath.Join(dir, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(path, 0o777); err != nil {
				return nil, err
			}
			if err := os.Chmod(path, 0o777); err != nil {
				return nil, err
			}
		case v.Secret != nil:
			s, err := k.Client.CoreV1().Secrets(pod.Namespace).Get(context.Background(), v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("secret volume %s: %w", v.Name, err)
			}
			if err := os.MkdirAll(path, 0o755); err != nil {
				return nil, err
			}
			mode := os.FileMode(0o644)
			if v.Secret.DefaultMode != nil {
				mode = os.FileMode(*v.Secret.DefaultMode)
			}
			for name, data := range s.Data {
				if err := os.WriteFile(filepath.Join(path, name), data, mode); err != nil {
					return nil, err
				}
			}
		case v.PersistentVolumeClaim != nil:
			host, ok := k.Claims[v.PersistentVolumeClaim.ClaimName]
			if !ok {
				return nil, fmt.Errorf("volume %s: no claim %s", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
			path = host
		default:
			return nil, fmt.Errorf("volume %s: a kind the stand-in kubelet does not make", v.Name)
		}
		out[v.Name] = path
	}
	return out, nil
}

// runContainer runs container c to its end (or until the Pod is deleted),
// reporting its states in *cs; it reports whether it exited 0.
func (k *Kubelet) runContainer(t testing.TB, pod *corev1.Pod, c corev1.Container, vols map[string]string, dir string, p *podRun, st *corev1.PodStatus, cs *corev1.ContainerStatus) bool {
	set := func(state corev1.ContainerState) {
		k.statusMu.Lock()
		cs.State = state
		k.statusMu.Unlock()
		k.report(t, pod, st)
	}
	terminated := func(code int32, reason, msg string) bool {
		set(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, FinishedAt: metav1.Now()}})
		return code == 0
	}
	select {
	case <-p.kill:
		return false
	default:
	}
	files, ok := k.Images[c.Image]
	if !ok {
		set(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull",
			Message: fmt.Sprintf("image %s: not found (the stand-in kubelet runs only its test images)", c.Image)}})
		return false
	}
	volumes := map[string]mount{}
	for _, vm := range c.VolumeMounts {
		src, ok := vols[vm.Name]
		if !ok {
			return terminated(128, "ContainerCannotRun", "no volume "+vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, vm.SubPath)
		}
		volumes[vm.MountPath] = mount{Kind: "bind", Source: src, ReadOnly: vm.ReadOnly}
	}
	root := filepath.Join(dir, "roots", c.Name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return terminated(128, "ContainerCannotRun", err.Error())
	}
	mounts, err := prepareRoot(root, volumes, files)
	if err != nil {
		return terminated(128, "ContainerCannotRun", err.Error())
	}
	host := pod.Spec.Hostname
	if host == "" {
		host = pod.Name
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + host}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			return terminated(128, "ContainerCannotRun", "env "+e.Name+": valueFrom is not supported by the stand-in kubelet")
		}
		env = append(env, e.Name+"="+e.Value)
	}
	wd := c.WorkingDir
	if wd == "" {
		wd = "/"
	}
	var cgDirs []string // memory, cpu
	if k.cg != nil {
		if cgDirs, err = k.cg.container(string(pod.UID)+"-"+c.Name, c.Resources.Limits); err != nil {
			return terminated(128, "ContainerCannotRun", err.Error())
		}
		// After the container's init has been waited for: the kernel
		// has ended and reaped every other process of its PID namespace.
		defer func() {
			if err := removeCgroups(cgDirs); err != nil {
				t.Error(err)
			}
		}()
	}
	spec, _ := json.Marshal(containerSpec{Root: root, Mounts: mounts, Dir: wd, Argv: append(append([]string{}, c.Command...), c.Args...), Env: env, Hostname: host, Cgroups: cgDirs})
	self, err := os.Executable()
	if err != nil {
		return terminated(128, "ContainerCannotRun", err.Error())
	}
	cmd := exec.Command(self)
	cmd.Env = []string{containerEnv + "=" + string(spec)}
	out := k.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout = &prefixWriter{prefix: pod.Name + "/" + c.Name + ": ", w: out}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return terminated(128, "ContainerCannotRun", err.Error())
	}
	set(corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-p.kill:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		grace := 30 * time.Second
		if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		select {
		case err = <-done:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
			err = <-done
		}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return terminated(0, "Completed", "")
	case errors.As(err, &exit):
		code := int32(exit.ExitCode())
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal())
		}
		if cgDirs != nil && oomKilled(cgDirs[0]) {
			return terminated(code, "OOMKilled", "")
		}
		return terminated(code, "Error", "")
	default:
		return terminated(128, "ContainerCannotRun", err.Error())
	}
}

// prefixWriter writes each Write with a prefix (the containers' output is
// for a failing test's log).
type prefixWriter struct {
	prefix string
	mu     sync.Mutex
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// ProcessesOf lists the live processes of this kubelet's containers whose
// environment has HANGAR_BUILD=name (a builder and what it started).
func (k *Kubelet) ProcessesOf(name string) []string {
	var left []string
	environs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range environs {
		dir := filepath.Dir(p)
		root, err := os.Readlink(filepath.Join(dir, "root"))
		if err != nil || !strings.HasPrefix(root, k.dir+"/") {
			continue
		}
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "HANGAR_BUILD="+name {
				cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
				left = append(left, filepath.Base(dir)+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
			}
		}
	}
	return left
}
