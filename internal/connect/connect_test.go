package connect

import (
	"strings"
	"testing"
)

// TestKnownHostsPinTheHostCA: with a host CA the gateway is known under
// the CA's principal (HostKeyAlias hangar-gateway) by @cert-authority, and
// by its own key when there is one; without, by its key under the
// build's alias as before.
func TestKnownHostsPinTheHostCA(t *testing.T) {
	base := Access{Build: 12, App: "demo", Alias: "build-12", GatewayHost: "gw.example.com", GatewayPort: 2222,
		BuilderKey: "ssh-ed25519 BUILDER\n"}
	for _, c := range []struct {
		name       string
		key, ca    string
		knownHosts string
		keyAlias   string
	}{
		{"CA only (separate gateways)", "", "ssh-ed25519 CA\n",
			"@cert-authority hangar-gateway ssh-ed25519 CA\nbuild-12 ssh-ed25519 BUILDER\n", "hangar-gateway"},
		{"CA and key (in-process gateway)", "ssh-ed25519 GW\n", "ssh-ed25519 CA\n",
			"@cert-authority hangar-gateway ssh-ed25519 CA\nhangar-gateway ssh-ed25519 GW\nbuild-12 ssh-ed25519 BUILDER\n", "hangar-gateway"},
		{"key only", "ssh-ed25519 GW\n", "",
			"hangar-gateway-build-12 ssh-ed25519 GW\nbuild-12 ssh-ed25519 BUILDER\n", "hangar-gateway-build-12"},
	} {
		a := base
		a.GatewayKey, a.GatewayCA = c.key, c.ca
		if got := a.Files().KnownHosts; got != c.knownHosts {
			t.Errorf("%s: known_hosts\n%s\nwant\n%s", c.name, got, c.knownHosts)
		}
		cfg := a.Config("/tmp/x")
		gwBlock, _, _ := strings.Cut(cfg, "\nHost build-12\n")
		if !strings.Contains(gwBlock, "Host hangar-gateway-build-12\n") || !strings.Contains(gwBlock, "  HostKeyAlias "+c.keyAlias+"\n") ||
			!strings.Contains(gwBlock, "  StrictHostKeyChecking yes\n") {
			t.Errorf("%s: the gateway's block:\n%s", c.name, gwBlock)
		}
	}
}
