package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/machine"
	"github.com/hangar-ci/hangar/internal/machine/kube"
	"github.com/hangar-ci/hangar/internal/machine/kube/kubetest"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

// The Pods' containers run under the stand-in kubelet (kubetest.Kubelet),
// which re-executes this test binary as each container's first process.
func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

const (
	ns       = "hangar-builds"
	serverID = "test"
	// The images the stand-in kubelet knows: the builder image holds the
	// test's hangar binary; the build image is the host's root.
	builderImage = "registry.invalid/hangar:test"
	builderPath  = "/.hangar-image/hangar"
	buildImage   = "registry.invalid/debian:test"
)

// needRoot skips (fails under HANGAR_TEST_KUBE=require) without root: the
// stand-in kubelet makes mount and PID namespaces.
func needRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(kubetest.RequireEnv) == "require" {
		t.Fatal("the kube driver's tests need root (the stand-in kubelet makes namespaces and mounts)")
	}
	t.Skip("the kube driver's tests need root (the stand-in kubelet makes namespaces and mounts)")
}

// started records the Pods the kubelet started, with their NetworkPolicy
// and Secret as they were then.
type started struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	netpols map[string]*networkingv1.NetworkPolicy
	secrets map[string]*corev1.Secret
}

func (s *started) pod(name string) (*corev1.Pod, *networkingv1.NetworkPolicy, *corev1.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[name], s.netpols[name], s.secrets[name]
}

// runPods makes the RuntimeClass gvisor and starts the stand-in kubelet
// for ns, with the test's images and the claim hangar-repos holding repos;
// it records the Pods it starts (with their NetworkPolicy and Secret as
// they were then), and logs the containers' output if the test fails.
func runPods(t *testing.T, c *kubetest.Cluster, repos string) (*kubetest.Kubelet, *started) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "gvisor"}, Handler: "runsc"}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := &started{pods: map[string]*corev1.Pod{}, netpols: map[string]*networkingv1.NetworkPolicy{}, secrets: map[string]*corev1.Secret{}}
	out := &syncbuf.Buffer{}
	k := &kubetest.Kubelet{
		Client:    c.Client,
		Namespace: ns,
		Images: map[string]map[string]string{
			builderImage: {builderPath: harness.Binary(t)},
			buildImage:   {},
		},
		Claims: map[string]string{"hangar-repos": repos},
		Output: out,
		OnStart: func(p *corev1.Pod) {
			np, _ := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, p.Name, metav1.GetOptions{})
			sec, _ := c.Client.CoreV1().Secrets(ns).Get(ctx, p.Name, metav1.GetOptions{})
			rec.mu.Lock()
			rec.pods[p.Name], rec.netpols[p.Name], rec.secrets[p.Name] = p, np, sec
			rec.mu.Unlock()
		},
	}
	k.Start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containers' output:\n%s", out.String())
		}
	})
	return k, rec
}

// TestBuildThroughKube runs `hangar server --driver kube` against a real
// API server, with the stand-in kubelet running the Pods: a build runs end
// to end, its Pod, Secret and NetworkPolicy are what the instance type and
// the config ask, and all are gone after the build; an SSH build is
// reached with OpenSSH and cancelled; the objects an earlier run of the
// server left are reaped at start, another server's are not.
func TestBuildThroughKube(t *testing.T) {
	needRoot(t)
	c := kubetest.Start(t)
	ctx := context.Background()
	c.Namespace(t, ns)
	// Left by an earlier run of this server (its labels), and another
	// server's.
	orphan := kube.PodName(serverID, "build-999")
	mine := map[string]string{kube.LabelManagedBy: "hangar", kube.LabelServer: serverID, kube.LabelMachine: "build-999"}
	theirs := map[string]string{kube.LabelManagedBy: "hangar", kube.LabelServer: "other", kube.LabelMachine: "build-999"}
	for name, labels := range map[string]map[string]string{orphan: mine, kube.PodName("other", "build-999"): theirs} {
		meta := metav1.ObjectMeta{Name: name, Labels: labels}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "builder", Image: "registry.invalid/gone:1"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	data := t.TempDir()
	k, rec := runPods(t, c, filepath.Join(data, "repos"))

	s := harness.StartServer(t, harness.Options{Driver: "kube", Data: data, Args: []string{
		"--kubeconfig", c.Kubeconfig, "--namespace", ns, "--kube-server-id", serverID,
		"--kube-link-listen", "127.0.0.1:0",
		"--kube-builder-image", builderImage, "--kube-builder-path", builderPath,
		"--kube-runtime-class", "gvisor", "--kube-repos-claim", "hangar-repos",
		"--default-image", buildImage,
	}})

	// The reaper ran before the server answered: the orphans are being
	// deleted (the Pod once the kubelet has stopped it), the other
	// server's objects stay.
	waitGone(t, "orphan Pod", func() error {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, orphan, metav1.GetOptions{})
		return err
	})
	if _, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, orphan, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("orphan NetworkPolicy: %v, want it deleted", err)
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, orphan, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("orphan Secret: %v, want it deleted", err)
	}
	for _, get := range []func() error{
		func() error {
			_, err := c.Client.CoreV1().Pods(ns).Get(ctx, kube.PodName("other", "build-999"), metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, kube.PodName("other", "build-999"), metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); err != nil {
			t.Errorf("another server's object: %v, want it kept", err)
		}
	}
	addDemo(t, s)
	name := runPass(t, s, s.Log)

	// What the driver created, as the kubelet saw it, and gone after the
	// build: the runner destroys the machine before it records the end.
	checkMachine(t, c, k, rec, serverID, name, s.Log(), "hangar server started")

	// An SSH build: the builder in the Pod opens its tunnel over the link
	// it dialled, and OpenSSH reaches the build's shell through the
	// gateway; cancelling the build removes the Pod.
	b := startBuild(t, s, "pass", "--ssh")
	waitSSH(t, s, b.ID)
	env := []string{"HOME=" + t.TempDir(), "HANGAR_TOKEN=" + s.Token}
	id := fmt.Sprint(b.ID)
	if r := s.HangarEnv(env, "ssh", id, "--", "hostname; printenv FCI_BUILD_DIR"); r.Code != 0 || r.Stdout != build.Alias(b.ID)+"\n/home/builder/clone\n" {
		t.Errorf("hangar ssh: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if r := s.Hangar("build", "cancel", id); r.Code != 0 {
		t.Fatalf("build cancel: %d %s", r.Code, r.Stderr)
	}
	if done := waitBuild(t, s, b.ID, time.Minute); done.Status != build.Canceled {
		t.Errorf("SSH build %s (%s), want canceled", done.Status, done.Message)
	}
	checkGone(t, c, kube.PodName(serverID, build.Alias(b.ID)))
	if n := k.ProcessesOf(build.Alias(b.ID)); len(n) > 0 {
		t.Errorf("processes of the SSH build left: %v", n)
	}
}

// TestRunnerThroughKube runs `hangar runner --driver kube`, a runner on
// another host than the server, against the real API server, with the
// stand-in kubelet running the Pods: the server (API only) queues a build,
// the runner claims it and runs it as a Pod with the flags the server's
// kube driver takes, and its objects are gone after the build. A runner
// killed while its build runs leaves the Pod running (as a cluster would);
// started again, it reaps the Pod, and the server has failed the build.
func TestRunnerThroughKube(t *testing.T) {
	needRoot(t)
	const runnerID = "runner-1"
	c := kubetest.Start(t)
	ctx := context.Background()
	c.Namespace(t, ns)
	data := t.TempDir() // the runner's
	// The runner fetches the builds' repositories into its own data dir:
	// that is what the claim holds.
	k, rec := runPods(t, c, filepath.Join(data, "repos"))

	s := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{"--no-runner"}})
	tr := s.Hangar("runner", "token", "create", "kuber")
	if tr.Code != 0 || !strings.HasPrefix(tr.Stdout, "hrt_") {
		t.Fatalf("runner token create: %d %s %s", tr.Code, tr.Stdout, tr.Stderr)
	}
	token := strings.TrimSpace(tr.Stdout)
	args := []string{"--driver", "kube", "--labels", "linux", "--capacity", "1",
		"--kubeconfig", c.Kubeconfig, "--namespace", ns, "--kube-server-id", runnerID,
		"--kube-link-listen", "127.0.0.1:0",
		"--kube-builder-image", builderImage, "--kube-builder-path", builderPath,
		"--kube-runtime-class", "gvisor", "--kube-repos-claim", "hangar-repos",
		"--default-image", buildImage,
	}
	r := harness.StartRunner(t, s.URL, token, data, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner:\n%s", r.Log())
		}
	})

	addDemo(t, s)
	name := runPass(t, s, r.Log)
	if list := s.Hangar("runner", "list").Stdout; !strings.Contains(list, "kuber") {
		t.Errorf("runner list lacks the runner:\n%s", list)
	}
	checkMachine(t, c, k, rec, runnerID, name, r.Log(), "hangar runner started")

	// Killed while a build runs: the Pod runs on. Started again, the
	// runner reaps it, and the server has failed the build.
	b := startBuild(t, s, "hold")
	podName := kube.PodName(runnerID, build.Alias(b.ID))
	waitLog(t, s, b.ID, fmt.Sprintf("holding-%d", b.ID))
	r.Kill()
	if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{}); err != nil {
		t.Fatalf("the killed runner's Pod: %v, want it running", err)
	}
	r = harness.StartRunner(t, s.URL, token, data, args...)
	waitGone(t, "the killed runner's Pod", func() error {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
		return err
	})
	checkGone(t, c, podName)
	if n := k.ProcessesOf(build.Alias(b.ID)); len(n) > 0 {
		t.Errorf("processes of the killed runner's build left: %v", n)
	}
	if done := waitBuild(t, s, b.ID, time.Minute); done.Status != build.Failed {
		t.Errorf("the killed runner's build: %s (%s), want failed", done.Status, done.Message)
	}
}

// addDemo adds the app demo: workflow pass greets and reads a file of
// the clone, hold holds until it is stopped.
func addDemo(t *testing.T, s *harness.Server) {
	t.Helper()
	repo := harness.NewRepo(t, map[string]string{
		"codemagic.yaml": `workflows:
  pass:
    scripts:
      - name: Greet
        script: echo "greeting from $(hostname) in $FCI_BUILD_DIR"
      - name: Check the clone
        script: cat marker.txt
  hold:
    scripts:
      - name: Hold
        script: echo "holding-$FCI_BUILD_ID"; exec sleep 600
`,
		"marker.txt": "marker-in-the-clone\n",
	})
	if r := s.Hangar("app", "add", "demo", "--repo", repo.Path); r.Code != 0 {
		t.Fatalf("app add: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
}

// runPass runs a build of demo's workflow pass to its end, checks its log
// and returns its machine's name; log is what ran it (shown on failure).
func runPass(t *testing.T, s *harness.Server, log func() string) string {
	t.Helper()
	b := startBuild(t, s, "pass")
	done := waitBuild(t, s, b.ID, 3*time.Minute)
	logs := s.Hangar("build", "logs", fmt.Sprint(b.ID)).Stdout
	if done.Status != build.Finished {
		t.Fatalf("build %s (%s), want finished; log:\n%s\nwhat ran it:\n%s", done.Status, done.Message, logs, log())
	}
	name := build.Alias(b.ID)
	for _, want := range []string{"Machine: kube driver", "greeting from " + name + " in /home/builder/", "marker-in-the-clone"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	return name
}

// startBuild starts a build of workflow of the app demo, with more flags.
func startBuild(t *testing.T, s *harness.Server, workflow string, flags ...string) build.Build {
	t.Helper()
	r := s.Hangar(append([]string{"build", "start", "demo", "--json", "--workflow", workflow}, flags...)...)
	if r.Code != 0 {
		t.Fatalf("build start: %d %s", r.Code, r.Stderr)
	}
	var b build.Build
	if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// waitLog waits until build id's log has line.
func waitLog(t *testing.T, s *harness.Server, id int64, line string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		logs := s.Hangar("build", "logs", fmt.Sprint(id)).Stdout
		if strings.Contains(logs, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %d: no %q in its log after 2 minutes:\n%s", id, line, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkGone checks that the Pod, Secret and NetworkPolicy called name
// are gone.
func checkGone(t *testing.T, c *kubetest.Cluster, name string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Pod %s: %v, want it deleted", name, err)
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Secret %s: %v, want it deleted", name, err)
	}
	if _, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("NetworkPolicy %s: %v, want it deleted", name, err)
	}
}

// checkMachine checks the objects of machine name of the driver with id
// id as the kubelet saw them when it started the Pod (the link address is
// in log, on the line with started), and that they and the machine's
// processes are gone.
func checkMachine(t *testing.T, c *kubetest.Cluster, k *kubetest.Kubelet, rec *started, id, name, log, started string) {
	t.Helper()
	owner, err := c.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), kube.OwnerName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the ConfigMap of %s: %v", id, err)
	}
	podName := kube.PodName(id, name)
	pod, np, sec := rec.pod(podName)
	if pod == nil {
		t.Fatalf("the kubelet ran no Pod %s", podName)
	}
	checkPod(t, pod, owner, id, name)
	checkNetworkPolicy(t, np, log, started, id, name)
	if sec == nil || len(sec.Data["hello"]) == 0 || !hasOwner(sec.OwnerReferences, owner) {
		t.Errorf("Secret %s: %+v, want the hello, owned by the ConfigMap of %s", podName, sec, id)
	}
	checkGone(t, c, podName)
	if n := k.ProcessesOf(name); len(n) > 0 {
		t.Errorf("processes of %s left: %v", name, n)
	}
}

// waitSSH waits until build id's SSH access is ready.
func waitSSH(t *testing.T, s *harness.Server, id int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := s.Hangar("build", "show", fmt.Sprint(id), "--json")
		var b build.Build
		if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
			t.Fatalf("build show: %v: %s %s", err, r.Stdout, r.Stderr)
		}
		if b.SSH.State == build.SSHReady || b.SSH.State == build.SSHConnected {
			return
		}
		if b.Status.Done() || time.Now().After(deadline) {
			t.Fatalf("build %d: SSH never ready (%s, ssh %s: %s); server:\n%s", id, b.Status, b.SSH.State, b.Message, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkPod checks the Pod of machine name of the driver with id id.
func checkPod(t *testing.T, pod *corev1.Pod, owner *corev1.ConfigMap, id, name string) {
	t.Helper()
	if pod.Labels[kube.LabelServer] != id || pod.Labels[kube.LabelMachine] != name || pod.Labels[kube.LabelManagedBy] != "hangar" {
		t.Errorf("Pod labels %v", pod.Labels)
	}
	if !hasOwner(pod.OwnerReferences, owner) {
		t.Errorf("Pod owners %+v, want the ConfigMap %s (%s)", pod.OwnerReferences, owner.Name, owner.UID)
	}
	if rc := pod.Spec.RuntimeClassName; rc == nil || *rc != "gvisor" {
		t.Errorf("runtimeClassName %v, want gvisor", rc)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the Pod mounts a service account token")
	}
	if pod.Spec.Hostname != name || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("hostname %q, restart policy %s", pod.Spec.Hostname, pod.Spec.RestartPolicy)
	}
	if len(pod.Spec.InitContainers) != 1 || len(pod.Spec.Containers) != 1 {
		t.Fatalf("containers: %d init, %d", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	ic, bc := pod.Spec.InitContainers[0], pod.Spec.Containers[0]
	if ic.Image != builderImage || ic.Command[0] != builderPath || bc.Image != buildImage || bc.Command[0] != kube.BuilderBin {
		t.Errorf("init container %s %v, builder %s %v", ic.Image, ic.Command, bc.Image, bc.Command)
	}
	// The default instance type "linux": 2 CPUs, 4 GiB, 8 GiB of disk.
	want := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("2"),
		corev1.ResourceMemory:           resource.MustParse("4Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("8Gi"),
	}
	for _, c := range []corev1.Container{ic, bc} {
		for _, l := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
			for res, q := range want {
				if got := l[res]; got.Cmp(q) != 0 {
					t.Errorf("container %s: %s %s, want %s", c.Name, res, got.String(), q.String())
				}
			}
		}
	}
	if pod.Status.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("QoS class %q, want Guaranteed", pod.Status.QOSClass)
	}
	for _, e := range bc.Env {
		if strings.Contains(e.Value, "PRIVATE KEY") {
			t.Error("a private key in the builder's environment")
		}
	}
}

// checkNetworkPolicy checks the NetworkPolicy of machine name of the
// driver with id id; the link address is in log, on the line with started.
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, log, started, id, name string) {
	t.Helper()
	if np == nil {
		t.Fatal("no NetworkPolicy when the Pod started")
	}
	if sel := np.Spec.PodSelector.MatchLabels; sel[kube.LabelMachine] != name || sel[kube.LabelServer] != id {
		t.Errorf("NetworkPolicy selects %v", sel)
	}
	types := fmt.Sprint(np.Spec.PolicyTypes)
	if !strings.Contains(types, "Ingress") || !strings.Contains(types, "Egress") || len(np.Spec.Ingress) != 0 {
		t.Errorf("policy types %s, ingress %v: want no ingress at all", types, np.Spec.Ingress)
	}
	// The link is open: the server's (runner's) log names its address
	// (the listener's, as no --kube-link-addr is given).
	link := ""
	for _, line := range strings.Split(log, "\n") {
		if _, after, ok := strings.Cut(line, started); ok {
			if _, v, ok := strings.Cut(after, "link="); ok {
				link = strings.Fields(v)[0]
			}
		}
	}
	host, port, err := net.SplitHostPort(link)
	if err != nil {
		t.Fatalf("link address %q in the server's log: %v", link, err)
	}
	found := false
	public := false
	for _, r := range np.Spec.Egress {
		for _, to := range r.To {
			if to.IPBlock != nil && to.IPBlock.CIDR == host+"/32" && len(r.Ports) == 1 && r.Ports[0].Port.String() == port {
				found = true
			}
			if to.IPBlock != nil && to.IPBlock.CIDR == "0.0.0.0/0" {
				public = strings.Contains(fmt.Sprint(to.IPBlock.Except), "10.0.0.0/8")
			}
		}
	}
	if !found || !public {
		t.Errorf("egress %+v: want the link %s open, and public addresses but not 10.0.0.0/8", np.Spec.Egress, link)
	}
}

func hasOwner(refs []metav1.OwnerReference, owner *corev1.ConfigMap) bool {
	for _, r := range refs {
		if r.UID == owner.UID && r.Kind == "ConfigMap" && r.Name == owner.Name {
			return true
		}
	}
	return false
}

// TestDriver drives the driver directly: a Pod whose image cannot be
// pulled ends the machine's Wait with the reason; the reaper, while it
// runs, deletes an orphan of this server and spares the live machine; and
// Destroy removes everything.
func TestDriver(t *testing.T) {
	needRoot(t)
	c := kubetest.Start(t)
	c.Namespace(t, ns)
	k := &kubetest.Kubelet{Client: c.Client, Namespace: ns}
	k.Start(t)
	ctx := context.Background()
	d, err := kube.New(ctx, kube.Config{
		Kubeconfig: c.Kubeconfig, Namespace: ns, ServerID: serverID,
		LinkListen: "127.0.0.1:0", BuilderImage: builderImage,
		ReapInterval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, err := d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m, err := d.Start(ctx, machine.Spec{Name: "build-7", Args: []string{"builder"},
		Stdin: strings.NewReader("{}\n"), Image: &machine.Image{Name: "registry.invalid/missing:1"}})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Wait()
	if err == nil || !strings.Contains(err.Error(), "ErrImagePull") {
		t.Errorf("Wait: %v, want ErrImagePull", err)
	}

	// An orphan appears while the server runs.
	orphan := kube.PodName(serverID, "build-8")
	if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: orphan,
		Labels: map[string]string{kube.LabelManagedBy: "hangar", kube.LabelServer: serverID, kube.LabelMachine: "build-8"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, "orphan Secret", func() error {
		_, err := c.Client.CoreV1().Secrets(ns).Get(ctx, orphan, metav1.GetOptions{})
		return err
	})
	live := kube.PodName(serverID, "build-7")
	if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, live, metav1.GetOptions{}); err != nil {
		t.Errorf("the live machine's Pod: %v", err)
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, live, metav1.GetOptions{}); err != nil {
		t.Errorf("the live machine's Secret: %v", err)
	}

	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.Destroy(dctx); err != nil {
		t.Fatal(err)
	}
	for what, list := range map[string]func() (int, error){
		"Pods": func() (int, error) {
			l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"Secrets": func() (int, error) {
			l, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
		"NetworkPolicies": func() (int, error) {
			l, err := c.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
			return len(l.Items), err
		},
	} {
		if n, err := list(); err != nil || n != 0 {
			t.Errorf("%s left: %d (%v)", what, n, err)
		}
	}
}

// waitGone waits until get reports NotFound.
func waitGone(t *testing.T, what string, get func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := get()
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after a minute (%v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitBuild(t *testing.T, s *harness.Server, id int64, within time.Duration) *build.Build {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := s.Hangar("build", "show", fmt.Sprint(id), "--json")
		var b build.Build
		if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
			t.Fatalf("build show: %v: %s %s", err, r.Stdout, r.Stderr)
		}
		if b.Status.Done() {
			return &b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %d still %s after %s; server:\n%s", id, b.Status, within, s.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
