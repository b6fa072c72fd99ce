package server

import (
	"net"
	"net/url"
	"strings"
)

// TransportWarning says why the API as served is not safe to use across a
// network ("" if it is): it is served over HTTPS (tls), or listens on
// loopback only (loopback) and users reach it either there or through an
// https --public-url (a TLS proxy in front).
func TransportWarning(tls, loopback bool, publicURL string) string {
	const risk = "API tokens and the private key in the one-line SSH command's script cross the network in clear: "
	const fix = "serve HTTPS (hangar server --tls-cert/--tls-key, or --tls-autocert HOST), or put a TLS proxy in front and set --public-url https://..."
	if tls {
		return ""
	}
	if publicURL != "" {
		u, err := url.Parse(publicURL)
		if err == nil && strings.EqualFold(u.Scheme, "https") {
			return ""
		}
		if err == nil && !loopbackHost(u.Hostname()) {
			return "the public URL " + publicURL + " is plain HTTP: " + risk + fix
		}
	}
	if loopback {
		return ""
	}
	return "the API is served over plain HTTP on a network address: " + risk + fix
}

// loopbackHost reports whether host (a name or an address) is this
// machine's loopback.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
