package kube_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hangar-ci/hangar/internal/machine/kube/kubetest"
	"github.com/hangar-ci/hangar/internal/syncbuf"
)

// TestStandInLimits: the stand-in kubelet runs each container under its
// memory and CPU limits: a container that allocates beyond its memory is
// OOM-killed (and reported so), one within it is not; while a container
// runs, its cgroups carry the limits, and they are gone after it.
func TestStandInLimits(t *testing.T) {
	needRoot(t)
	c := kubetest.Start(t)
	c.Namespace(t, ns)
	out := &syncbuf.Buffer{}
	k := &kubetest.Kubelet{Client: c.Client, Namespace: ns, Images: map[string]map[string]string{buildImage: {}}, Output: out}
	k.Start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containers' output:\n%s", out.String())
		}
	})
	if ok, why := k.Limits(); !ok {
		t.Skipf("the stand-in kubelet enforces no limits on this host: %s", why)
	}
	ctx := context.Background()
	limits := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
	run := func(name, script string, grace int64) {
		t.Helper()
		no := false
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "main", Image: buildImage, Command: []string{"/bin/sh", "-c", script},
					Env:       []corev1.EnvVar{{Name: "HANGAR_BUILD", Value: name}},
					Resources: corev1.ResourceRequirements{Limits: limits, Requests: limits}}},
			},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// tail buffers a line without a newline whole.
	run("hog", "head -c 256m /dev/zero | tail >/dev/null", 0)
	run("fits", "head -c 16m /dev/zero | tail | wc -c", 0)
	// A grace period, so that the API server waits for the kubelet to
	// have stopped the Pod (and removed its cgroups) before the Pod goes;
	// the script ends at SIGTERM (as PID 1 it would ignore it otherwise).
	run("spin", "trap 'exit 0' TERM; echo spinning; sleep 600 & wait", 30)
	for name, want := range map[string]struct {
		phase  corev1.PodPhase
		reason string
		code   int32
	}{
		"hog":  {corev1.PodFailed, "OOMKilled", 137},
		"fits": {corev1.PodSucceeded, "Completed", 0},
	} {
		p := waitPod(t, c, name, func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		})
		st := p.Status.ContainerStatuses[0].State.Terminated
		if p.Status.Phase != want.phase || st == nil || st.Reason != want.reason || st.ExitCode != want.code {
			t.Errorf("Pod %s: %s, container %+v; want %s, %s, exit code %d", name, p.Status.Phase, st, want.phase, want.reason, want.code)
		}
	}

	// Its script has run: it is in its root, with its environment.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "spin/main: spinning") {
		if time.Now().After(deadline) {
			t.Fatal("the Pod spin said nothing in a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	procs := k.ProcessesOf("spin")
	if len(procs) == 0 {
		t.Fatal("no process of the running Pod spin")
	}
	pid := strings.Fields(procs[0])[0]
	data, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for ctrl, want := range map[string]struct{ file, value string }{
			"memory": {"memory.limit_in_bytes", "67108864"},
			"cpu":    {"cpu.cfs_quota_us", "50000"},
		} {
			if !slices.Contains(strings.Split(parts[1], ","), ctrl) {
				continue
			}
			dir := filepath.Join("/sys/fs/cgroup", ctrl, parts[2])
			dirs = append(dirs, dir)
			got, err := os.ReadFile(filepath.Join(dir, want.file))
			if err != nil || strings.TrimSpace(string(got)) != want.value {
				t.Errorf("%s of the running container: %q (%v), want %s", want.file, got, err, want.value)
			}
		}
	}
	if len(dirs) != 2 {
		t.Fatalf("the running container's cgroups: %q, want its own memory and cpu ones", data)
	}
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "spin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, "Pod spin", func() error {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, "spin", metav1.GetOptions{})
		return err
	})
	for _, d := range dirs {
		// The kubelet removes the cgroups before it removes the Pod.
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s after the Pod: %v, want it removed", d, err)
		}
	}
}

// waitPod waits until Pod name satisfies ok, and returns it.
func waitPod(t *testing.T, c *kubetest.Cluster, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		p, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pod %s: not there after a minute (%v): %+v", name, err, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
