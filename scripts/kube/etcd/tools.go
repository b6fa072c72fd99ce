//go:build tools

// Package tools pins etcd for scripts/kube/build.sh, which builds it for the
// Kubernetes driver's tests (see docs/kubernetes.md).
package tools

import _ "go.etcd.io/etcd/server/v3"
