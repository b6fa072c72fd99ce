// Package connect writes what a user runs to reach a build's machine over
// SSH: a bash script (Linux, macOS), a PowerShell script (Windows' built-in
// OpenSSH) and ssh_config files. Each pins the gateway's and the builder's
// host keys (no trust on first use) and jumps through the gateway with
// ProxyJump; only OpenSSH's client is needed.
package connect

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/hangar-ci/hangar/internal/sshca"
)

// Access is everything needed to connect to one build.
type Access struct {
	Build       int64
	App         string
	Alias       string // "build-12": ssh host name and the gateway user
	GatewayHost string
	GatewayPort int
	GatewayKey  string // authorized_keys format; may be empty with GatewayCA
	// GatewayCA is the host CA that signs every gateway's host
	// certificate (authorized_keys format): known_hosts trusts it
	// (@cert-authority), so any of several gateways is trusted. Empty:
	// only GatewayKey is pinned.
	GatewayCA   string
	BuilderKey  string // authorized_keys format
	PrivateKey  string // OpenSSH PEM: a secret
	Certificate string // authorized_keys format
	ExpiresAt   time.Time
}

// Files are the files a connection needs, by name.
type Files struct {
	Key, Cert, KnownHosts string
}

// Files returns the key, certificate and known_hosts contents.
func (a *Access) Files() Files {
	return Files{
		Key:        ensureNL(a.PrivateKey),
		Cert:       ensureNL(a.Certificate),
		KnownHosts: a.gatewayKnownHosts() + a.Alias + " " + strings.TrimSpace(a.BuilderKey) + "\n",
	}
}

func (a *Access) gatewayAlias() string { return "hangar-gateway-" + a.Alias }

// gatewayKeyAlias is the name known_hosts lists the gateway under: with a
// host CA, the principal of every gateway's host certificate.
func (a *Access) gatewayKeyAlias() string {
	if a.GatewayCA != "" {
		return sshca.GatewayPrincipal
	}
	return a.gatewayAlias()
}

// gatewayKnownHosts are the known_hosts lines of the gateway: the host CA
// (@cert-authority) and the gateway's own key, whichever are set.
func (a *Access) gatewayKnownHosts() string {
	var b strings.Builder
	if a.GatewayCA != "" {
		fmt.Fprintf(&b, "@cert-authority %s %s\n", a.gatewayKeyAlias(), strings.TrimSpace(a.GatewayCA))
	}
	if a.GatewayKey != "" {
		fmt.Fprintf(&b, "%s %s\n", a.gatewayKeyAlias(), strings.TrimSpace(a.GatewayKey))
	}
	return b.String()
}

func ensureNL(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// Config returns an ssh_config whose files live in dir (as the client
// sees it, forward slashes on Windows too).
func (a *Access) Config(dir string) string {
	var b strings.Builder
	opts := func(keyAlias string) {
		fmt.Fprintf(&b, "  IdentityFile \"%s/key\"\n", dir)
		fmt.Fprintf(&b, "  CertificateFile \"%s/key-cert.pub\"\n", dir)
		fmt.Fprintf(&b, "  UserKnownHostsFile \"%s/known_hosts\"\n", dir)
		// Only the build's key and certificate authenticate: IdentitiesOnly
		// keeps the user's agent keys from being offered. The agent itself
		// stays reachable for forwarding, which only -A (or ForwardAgent
		// yes given by the user) turns on.
		b.WriteString("  IdentitiesOnly yes\n  ForwardAgent no\n  PreferredAuthentications publickey\n")
		b.WriteString("  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
		b.WriteString("  GlobalKnownHostsFile none\n  StrictHostKeyChecking yes\n  UpdateHostKeys no\n")
		fmt.Fprintf(&b, "  HostKeyAlias %s\n", keyAlias)
		b.WriteString("  ServerAliveInterval 30\n  ServerAliveCountMax 4\n")
		// AES-GCM first: with AES-NI it is the cheapest cipher on both ends
		// (x/crypto's ChaCha20 has no assembly on amd64).
		b.WriteString("  Ciphers ^aes128-gcm@openssh.com,aes256-gcm@openssh.com\n")
	}
	fmt.Fprintf(&b, "# Hangar: build %d of %s, until %s\n", a.Build, a.App, a.ExpiresAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %d\n  User %s\n", a.gatewayAlias(), a.GatewayHost, a.GatewayPort, a.Alias)
	opts(a.gatewayKeyAlias())
	fmt.Fprintf(&b, "\nHost %s\n  HostName %s\n  Port 22\n  User builder\n  ProxyJump %s\n", a.Alias, a.Alias, a.gatewayAlias())
	opts(a.Alias)
	// HANGAR_SHELL=new asks for a separate login shell instead of
	// re-attaching to the detached one (docs/ssh.md).
	b.WriteString("  SendEnv HANGAR_SHELL\n")
	return b.String()
}

// GatewayAddr is host:port of the gateway.
func (a *Access) GatewayAddr() string {
	return net.JoinHostPort(a.GatewayHost, strconv.Itoa(a.GatewayPort))
}

var bashTmpl = template.Must(template.New("bash").Parse(`#!/usr/bin/env bash
# Hangar: SSH into build {{.A.Build}} of {{.A.App}} ({{.A.Alias}}), usable until {{.Expires}}.
# Needs only OpenSSH's ssh client. With no arguments it opens a shell on the
# build's machine; with arguments it runs them there and returns their exit status:
#   bash this-script.sh                 # interactive shell (logging out finishes the build;
#                                       # run it again after a dropped connection to get
#                                       # the same shell back; HANGAR_SHELL=new for another)
#   bash this-script.sh printenv PATH   # one command
#   bash this-script.sh 'cd $FCI_BUILD_DIR && ls'   # run by the remote shell, as with ssh
# Everything it writes goes to a private temporary directory, removed on every
# exit: normal, error, Ctrl-C, SIGTERM or a closed terminal (SIGHUP).
set -u
hangar_dir=
hangar_pid=
hangar_cleanup() {
	if [ -n "$hangar_dir" ]; then
		rm -rf "$hangar_dir"
		hangar_dir=
	fi
}
# A signal ends ssh (which runs in the background so that the signal is
# handled at once) and the script; the EXIT trap removes the directory.
hangar_stop() {
	trap '' INT TERM HUP
	if [ -n "$hangar_pid" ]; then
		kill -TERM "$hangar_pid" 2>/dev/null
		wait "$hangar_pid" 2>/dev/null
	fi
	exit "$1"
}
trap hangar_cleanup EXIT
trap 'hangar_stop 130' INT
trap 'hangar_stop 143' TERM
trap 'hangar_stop 129' HUP
# hangar_ssh runs ssh with the script's stdin (or what is redirected) and
# waits for it; a trapped signal interrupts the wait.
hangar_ssh() {
	# LocalCommand runs once the connection to the machine is made: it
	# tells a dropped connection from one that was never made.
	ssh -o PermitLocalCommand=yes -o "LocalCommand=touch '$hangar_dir/connected'" "$@" <&0 &
	hangar_pid=$!
	local rc=0
	wait "$hangar_pid" || rc=$?
	hangar_pid=
	return "$rc"
}
hangar_main() {
	if ! command -v ssh >/dev/null 2>&1; then
		echo "hangar: this script needs OpenSSH's ssh client (Debian/Ubuntu: apt-get install openssh-client)" >&2
		return 127
	fi
	umask 077
	hangar_dir=$(mktemp -d "${TMPDIR:-/tmp}/hangar-ssh.XXXXXXXX") || return 1
	local dir=$hangar_dir
	cat >"$dir/key" <<'HANGAR_KEY_EOF'
{{.F.Key}}HANGAR_KEY_EOF
	cat >"$dir/key-cert.pub" <<'HANGAR_CERT_EOF'
{{.F.Cert}}HANGAR_CERT_EOF
	cat >"$dir/known_hosts" <<'HANGAR_HOSTS_EOF'
{{.F.KnownHosts}}HANGAR_HOSTS_EOF
	sed "s#@DIR@#$dir#g" >"$dir/config" <<'HANGAR_CONFIG_EOF'
{{.Config}}HANGAR_CONFIG_EOF
	local rc=0
	if [ $# -eq 0 ]; then
		# A shell reads the terminal, even when this script came through a pipe.
		if [ -t 0 ]; then
			hangar_ssh -F "$dir/config" -t {{.A.Alias}} || rc=$?
		elif { : </dev/tty; } 2>/dev/null; then
			hangar_ssh -F "$dir/config" -t {{.A.Alias}} </dev/tty || rc=$?
		else
			hangar_ssh -F "$dir/config" {{.A.Alias}} || rc=$?
		fi
	else
		# As with ssh HOST ARGS: the arguments, joined with spaces, are a
		# command line for the remote shell.
		local IFS=' '
		hangar_ssh -F "$dir/config" {{.A.Alias}} "$*" || rc=$?
	fi
	if [ "$rc" -eq 255 ]; then
		hangar_why "$#"
	fi
	return "$rc"
}
# hangar_why says why ssh failed (exit 255), asking the gateway whether
# access is still open: a closed one says why in its banner.
hangar_why() {
	local dir=$hangar_dir why
	if ssh -F "$dir/config" -o BatchMode=yes -o ConnectTimeout=15 {{.A.Alias}} true </dev/null >/dev/null 2>"$dir/probe"; then
		if [ ! -e "$dir/connected" ]; then
			echo "hangar: could not connect to {{.A.Alias}} through {{.A.GatewayAddr}}; its SSH access is open: try again." >&2
		elif [ "$1" -eq 0 ]; then
			echo "hangar: the connection to {{.A.Alias}} was lost. Your shell keeps running on the machine: run this again to get it back." >&2
		else
			echo "hangar: the connection to {{.A.Alias}} was lost; the command was hung up." >&2
		fi
		return
	fi
	why=$(sed -n 's/^Hangar: //p' "$dir/probe" | head -n 1)
	if [ -n "$why" ]; then
		echo "hangar: $why" >&2
	else
		echo "hangar: could not connect to {{.A.Alias}} through {{.A.GatewayAddr}}. SSH access ends when the build ends; see the build's page or 'hangar build show {{.A.Build}}'." >&2
	fi
}
hangar_main "$@"
exit $?
`))

// Bash returns the bash script.
func (a *Access) Bash() string {
	var b bytes.Buffer
	_ = bashTmpl.Execute(&b, map[string]any{
		"A": a, "F": a.Files(), "Config": a.Config("@DIR@"), "Expires": a.ExpiresAt.UTC().Format(time.RFC3339),
	})
	return b.String()
}

var psTmpl = template.Must(template.New("ps").Parse(`# Hangar: SSH into build {{.A.Build}} of {{.A.App}} ({{.A.Alias}}), usable until {{.Expires}}.
# For Windows' built-in OpenSSH client (ssh.exe). With no arguments it opens a
# shell on the build's machine; with arguments it runs them there, joined with
# spaces and run by the remote shell (as with ssh HOST ARGS).
$ErrorActionPreference = 'Stop'
if (-not (Get-Command ssh.exe -ErrorAction SilentlyContinue)) {
    Write-Error "hangar: this script needs Windows' OpenSSH client (Settings > Apps > Optional features > OpenSSH Client)"
    exit 127
}
$dir = Join-Path ([IO.Path]::GetTempPath()) ("hangar-ssh-" + [guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $dir | Out-Null
$code = 255
try {
    # Only the current user may read the files (OpenSSH refuses a key others can read).
    & icacls.exe $dir /inheritance:r /grant:r ("{0}:(OI)(CI)F" -f [Security.Principal.WindowsIdentity]::GetCurrent().Name) | Out-Null
    $fwd = $dir -replace '\\', '/'
    [IO.File]::WriteAllText((Join-Path $dir 'key'), @'
{{.F.Key}}'@.Replace("` + "`r`n" + `", "` + "`n" + `"))
    [IO.File]::WriteAllText((Join-Path $dir 'key-cert.pub'), @'
{{.F.Cert}}'@)
    [IO.File]::WriteAllText((Join-Path $dir 'known_hosts'), @'
{{.F.KnownHosts}}'@)
    [IO.File]::WriteAllText((Join-Path $dir 'config'), (@'
{{.Config}}'@).Replace('@DIR@', $fwd))
    if ($args.Count -gt 0) {
        & ssh.exe -F "$fwd/config" {{.A.Alias}} ($args -join ' ')
    } else {
        & ssh.exe -F "$fwd/config" -t {{.A.Alias}}
    }
    $code = $LASTEXITCODE
    if ($code -eq 255) {
        Write-Host "hangar: could not connect to {{.A.Alias}} through {{.A.GatewayAddr}}. SSH access ends when the build ends."
    }
} finally {
    Remove-Item -Recurse -Force $dir -ErrorAction SilentlyContinue
}
exit $code
`))

// PowerShell returns the PowerShell script.
func (a *Access) PowerShell() string {
	var b bytes.Buffer
	_ = psTmpl.Execute(&b, map[string]any{
		"A": a, "F": a.Files(), "Config": a.Config("@DIR@"), "Expires": a.ExpiresAt.UTC().Format(time.RFC3339),
	})
	return b.String()
}

// OneLiner is the command that fetches the bash script from url and runs it.
func OneLiner(url string) string {
	return "curl -fsSL '" + url + "' | bash"
}

// PowerShellOneLiner is the same for PowerShell.
func PowerShellOneLiner(url string) string {
	return "powershell -NoProfile -Command \"iex (iwr -UseBasicParsing '" + url + "?shell=powershell').Content\""
}
