package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/hangar-ci/hangar/internal/machine"
)

// maxHello bounds the builder's hello (a few KiB).
const maxHello = 1 << 20

var machineNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$`)

// Machine is a running Pod.
type Machine struct {
	d    *Driver
	name string // the machine's, e.g. "build-12"
	pod  string // its objects'
	uid  types.UID

	// exited is closed when the Pod has ended (or is gone); waitErr is set
	// before.
	exited  chan struct{}
	waitErr error
	// stopWatch ends the Pod's watch and its log stream; watching is
	// closed when both have returned.
	stopWatch context.CancelFunc
	watching  sync.WaitGroup

	once       sync.Once
	destroyErr error // set in once
}

var _ machine.Machine = (*Machine)(nil)

// Start implements machine.Driver: it creates the machine's Secret,
// NetworkPolicy and Pod, in that order (the policy applies from the Pod's
// start), and returns once the API server has accepted them. The cluster
// then schedules the Pod and pulls its images: the runner's link timeout
// bounds that.
func (d *Driver) Start(ctx context.Context, spec machine.Spec) (machine.Machine, error) {
	if !machineNameRE.MatchString(spec.Name) {
		return nil, fmt.Errorf("kube driver: machine name %q: want up to 50 lowercase letters, digits and inner '-'", spec.Name)
	}
	if spec.Image == nil || spec.Image.Name == "" {
		return nil, fmt.Errorf("kube driver: start %s: no image: Pods run the instance type's image, which must be a registry image (--default-image, or the instance types' images)", spec.Name)
	}
	var hello []byte
	if spec.Stdin != nil {
		var err error
		if hello, err = io.ReadAll(io.LimitReader(spec.Stdin, maxHello+1)); err != nil {
			return nil, fmt.Errorf("kube driver: start %s: read the builder's input: %w", spec.Name, err)
		}
		if len(hello) > maxHello {
			return nil, fmt.Errorf("kube driver: start %s: the builder's input is over %d bytes", spec.Name, maxHello)
		}
	}
	repoMounts, err := d.repoMounts(spec.Mounts)
	if err != nil {
		return nil, fmt.Errorf("kube driver: start %s: %w", spec.Name, err)
	}
	m := &Machine{d: d, name: spec.Name, pod: PodName(d.cfg.ServerID, spec.Name), exited: make(chan struct{})}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("kube driver: closed")
	}
	if _, ok := d.machines[spec.Name]; ok {
		d.mu.Unlock()
		return nil, fmt.Errorf("kube driver: start %s: a machine of that name exists", spec.Name)
	}
	// Registered before anything is created: the reaper spares it.
	d.machines[spec.Name] = m
	d.mu.Unlock()

	if err := m.create(ctx, spec, hello, repoMounts); err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if derr := m.deleteObjects(dctx); derr != nil {
			err = errors.Join(err, derr)
		}
		d.forget(m)
		return nil, fmt.Errorf("kube driver: start %s: %w", spec.Name, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	m.stopWatch = cancel
	m.watching.Add(1)
	go m.watch(wctx, spec.Output)
	return m, nil
}

func (m *Machine) create(ctx context.Context, spec machine.Spec, hello []byte, repoMounts []corev1.VolumeMount) error {
	d := m.d
	ns := d.cfg.Namespace
	if _, err := d.client.CoreV1().Secrets(ns).Create(ctx, d.helloSecret(spec.Name, hello), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the Secret: %w", err)
	}
	if _, err := d.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, d.networkPolicy(spec.Name), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the NetworkPolicy: %w", err)
	}
	p, err := d.client.CoreV1().Pods(ns).Create(ctx, d.pod(spec, repoMounts), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create the Pod: %w", err)
	}
	m.uid = p.UID
	return nil
}

// forget drops m from the live machines.
func (d *Driver) forget(m *Machine) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.machines[m.name] == m {
		delete(d.machines, m.name)
	}
}

// Wait implements machine.Machine: it returns when the Pod has ended, nil
// if the builder exited 0.
func (m *Machine) Wait() error {
	<-m.exited
	return m.waitErr
}

// waitingFatal are the reasons of a waiting container that will not start
// by itself.
var waitingFatal = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// watch follows the Pod until it ends, is deleted or cannot start, sets
// waitErr and closes exited; it streams the builder's output to out once
// the builder runs.
func (m *Machine) watch(ctx context.Context, out io.Writer) {
	defer m.watching.Done()
	lw := m.d.podListWatch(m.pod)
	var result error
	logging := false
	// Gone before the first list (deleted at once): nothing to wait for.
	gone := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(m.d.cfg.Namespace + "/" + m.pod)
		if err == nil && !exists {
			result = fmt.Errorf("the Pod %s was deleted", m.pod)
		}
		return !exists, err
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, gone, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || p.UID != m.uid {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			result = fmt.Errorf("the Pod %s was deleted", m.pod)
			return true, nil
		}
		if !logging && out != nil && running(p) {
			logging = true
			m.watching.Add(1)
			go m.streamLogs(ctx, out)
		}
		done, err := podEnded(p)
		result = err
		return done, nil
	})
	if err != nil && result == nil {
		result = fmt.Errorf("watch the Pod %s: %w", m.pod, err)
	}
	m.waitErr = result
	close(m.exited)
}

func running(p *corev1.Pod) bool {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "builder" && (s.State.Running != nil || s.State.Terminated != nil) {
			return true
		}
	}
	return false
}

// podEnded reports whether the Pod has ended, or will never run, and why
// (nil: the builder exited 0).
func podEnded(p *corev1.Pod) (bool, error) {
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return true, nil
	case corev1.PodFailed:
		for _, s := range statuses {
			if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
				return true, fmt.Errorf("the Pod %s failed: container %s exited with code %d (%s)", p.Name, s.Name, t.ExitCode, t.Reason)
			}
		}
		return true, fmt.Errorf("the Pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message)
	}
	for _, s := range statuses {
		if w := s.State.Waiting; w != nil && waitingFatal[w.Reason] {
			return true, fmt.Errorf("the Pod %s cannot start container %s (image %s): %s: %s", p.Name, s.Name, s.Image, w.Reason, w.Message)
		}
	}
	return false, nil
}

// streamLogs copies the builder container's output to out until it ends.
// Best effort: the output is diagnostics, and some clusters do not serve
// logs to the server (it is not where the build's log comes from).
func (m *Machine) streamLogs(ctx context.Context, out io.Writer) {
	defer m.watching.Done()
	rc, err := m.d.client.CoreV1().Pods(m.d.cfg.Namespace).GetLogs(m.pod, &corev1.PodLogOptions{Container: "builder", Follow: true}).Stream(ctx)
	if err != nil {
		m.d.log.Debug("kube driver: builder output not available", "pod", m.pod, "err", err)
		return
	}
	defer rc.Close()
	_, _ = io.Copy(out, rc)
}

// Destroy implements machine.Machine: it deletes the Pod and waits until
// it is gone (its processes have ended), then deletes the Secret and the
// NetworkPolicy.
func (m *Machine) Destroy(ctx context.Context) error {
	m.once.Do(func() {
		err := m.deleteObjects(ctx)
		m.stopWatch()
		m.watching.Wait()
		// Not live any more, whatever happened: the reaper deletes what
		// is left.
		m.d.forget(m)
		if err != nil {
			m.destroyErr = fmt.Errorf("kube driver: destroy %s: %w", m.name, err)
		}
	})
	return m.destroyErr
}

// deleteObjects deletes the machine's Pod, waits until it is gone, then
// deletes its Secret and NetworkPolicy. What does not exist is skipped.
func (m *Machine) deleteObjects(ctx context.Context) error {
	d := m.d
	ns := d.cfg.Namespace
	var errs []error
	grace := int64(terminationGrace)
	err := d.client.CoreV1().Pods(ns).Delete(ctx, m.pod, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("delete the Pod: %w", err))
	default:
		if err := d.waitGone(ctx, m.pod); err != nil {
			// Force it: the kubelet then kills what is left of it on its
			// own, without the API server waiting.
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ferr := d.client.CoreV1().Pods(ns).Delete(fctx, m.pod, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
			cancel()
			if ferr != nil && !apierrors.IsNotFound(ferr) {
				err = errors.Join(err, ferr)
			}
			errs = append(errs, err)
		}
	}
	if err := d.client.CoreV1().Secrets(ns).Delete(ctx, m.pod, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the Secret: %w", err))
	}
	if err := d.client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, m.pod, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete the NetworkPolicy: %w", err))
	}
	return errors.Join(errs...)
}

// waitGone waits until Pod name no longer exists (the kubelet has stopped
// its containers and removed it).
func (d *Driver) waitGone(ctx context.Context, name string) error {
	lw := d.podListWatch(name)
	gone := func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(d.cfg.Namespace + "/" + name)
		return !exists, err
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, gone, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Deleted, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the Pod %s to be gone: %w", name, err)
	}
	return nil
}

// podListWatch lists and watches Pod name alone.
func (d *Driver) podListWatch(name string) cache.ListerWatcher {
	pods := d.client.CoreV1().Pods(d.cfg.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return pods.Watch(ctx, o)
		},
	}
}
