package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Reap deletes the Pods, Secrets and NetworkPolicies of this server (its
// labels) whose machine is not live: what an earlier run of the server
// left when it crashed, or what a failed Destroy left. Objects without
// this server's labels are never touched.
func (d *Driver) Reap(ctx context.Context) error {
	ns := d.cfg.Namespace
	list := metav1.ListOptions{LabelSelector: d.selector()}
	type object struct {
		kind, name, machine string
		uid                 types.UID
		del                 func(ctx context.Context, name string, o metav1.DeleteOptions) error
	}
	var objects []object
	pods, err := d.client.CoreV1().Pods(ns).List(ctx, list)
	if err != nil {
		return fmt.Errorf("list Pods: %w", err)
	}
	for _, p := range pods.Items {
		objects = append(objects, object{"Pod", p.Name, p.Labels[LabelMachine], p.UID, d.client.CoreV1().Pods(ns).Delete})
	}
	secrets, err := d.client.CoreV1().Secrets(ns).List(ctx, list)
	if err != nil {
		return fmt.Errorf("list Secrets: %w", err)
	}
	for _, s := range secrets.Items {
		objects = append(objects, object{"Secret", s.Name, s.Labels[LabelMachine], s.UID, d.client.CoreV1().Secrets(ns).Delete})
	}
	nps, err := d.client.NetworkingV1().NetworkPolicies(ns).List(ctx, list)
	if err != nil {
		return fmt.Errorf("list NetworkPolicies: %w", err)
	}
	for _, n := range nps.Items {
		objects = append(objects, object{"NetworkPolicy", n.Name, n.Labels[LabelMachine], n.UID, d.client.NetworkingV1().NetworkPolicies(ns).Delete})
	}
	// Only now which machines are live: Start registers a machine before
	// it creates its objects, so every object listed above whose machine
	// is not live now belongs to no running build.
	d.mu.Lock()
	live := make(map[string]bool, len(d.machines))
	for name := range d.machines {
		live[name] = true
	}
	d.mu.Unlock()
	var errs []error
	for _, o := range objects {
		if o.machine == "" || live[o.machine] {
			continue
		}
		uid := o.uid
		err := o.del(ctx, o.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		switch {
		case err == nil:
			d.log.Info("kube driver: deleted an orphan", "kind", o.kind, "name", o.name, "machine", o.machine)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("delete %s %s: %w", o.kind, o.name, err))
		}
	}
	return errors.Join(errs...)
}

// reapLoop runs Reap every ReapInterval until ctx ends.
func (d *Driver) reapLoop(ctx context.Context) {
	defer close(d.reaperDone)
	t := time.NewTicker(d.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := d.Reap(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("kube driver: reaper", "err", err)
		}
	}
}
