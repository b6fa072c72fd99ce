#!/usr/bin/env bash
# Builds etcd and kube-apiserver for the Kubernetes driver's tests
# (internal/machine/kube) from the Go module proxy, once, into a cache keyed
# by version: $HANGAR_KUBE_CACHE (default /var/cache/hangar/k8s)/VERSION/bin.
# Prints that bin directory. A cold build takes minutes (docs/kubernetes.md);
# later runs find the binaries and return at once. With --path it only
# prints that directory (the tests use it to find the binaries).
set -euo pipefail

# All in a function: bash reads it whole before running it, so editing this
# file during a build does not break the build.
main() {
	here=$(cd "$(dirname "$0")" && pwd)
	KUBE_VERSION=v1.37.2
	ETCD_VERSION=v3.6.16
	cache=${HANGAR_KUBE_CACHE:-/var/cache/hangar/k8s}
	out=$cache/kube-$KUBE_VERSION-etcd-$ETCD_VERSION/bin
	if [[ ${1:-} == --path ]]; then
		echo "$out"
		exit 0
	fi
	if [[ -x $out/kube-apiserver && -x $out/etcd ]]; then
		echo "$out"
		exit 0
	fi
	mkdir -p "$cache"
	# One builder at a time: a second `make test` waits for the first's binaries.
	exec 9>"$cache/build.lock"
	flock 9
	if [[ -x $out/kube-apiserver && -x $out/etcd ]]; then
		echo "$out"
		exit 0
	fi
	tmp=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Build from copies: go.sum is committed, so -mod=readonly proves it complete.
	cp -r "$here/apiserver" "$here/etcd" "$tmp/"
	mkdir -p "$tmp/bin"
	start=$SECONDS
	minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	(cd "$tmp/etcd" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags='-s -w' -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3) >&2
	(cd "$tmp/apiserver" && CGO_ENABLED=0 go build -mod=readonly -trimpath \
		-ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
		-o "$tmp/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
	mkdir -p "$(dirname "$out")"
	mv "$tmp/bin" "$out"
	echo "built etcd $ETCD_VERSION and kube-apiserver $KUBE_VERSION in $((SECONDS - start)) s" >&2
	echo "$out"
}

main "$@"
