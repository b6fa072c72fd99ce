//go:build tools

// Package tools pins kube-apiserver for scripts/kube/build.sh, which builds
// it for the Kubernetes driver's tests (see docs/kubernetes.md).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
