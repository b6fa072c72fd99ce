package workflow

import (
	"net/mail"
	"strings"

	"gopkg.in/yaml.v3"
)

// Email is a workflow's publishing.email: who is told of the build's end.
// Codemagic's defaults: both outcomes are notified.
type Email struct {
	Recipients []string
	// Success and Failure are notify.success and notify.failure.
	Success bool
	Failure bool
}

// Publishing is what a workflow's publishing section asks that Hangar
// runs: its scripts (after the build's steps, also after a failure) and
// email. Other publishers (google_play, app_store_connect, slack, ...) are
// in Workflow.Ignored as "publishing.NAME".
type Publishing struct {
	Scripts []Script
	Email   *Email
}

// strList reads a list of non-empty strings (artifacts, cache_paths).
func (p *parser) strList(val *yaml.Node, what string) ([]string, *Error) {
	n := resolve(val)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, "%s must be a list of paths, got %s", what, got(n))
	}
	var out []string
	for _, item := range n.Content {
		v := resolve(item)
		if v.Kind != yaml.ScalarNode || isNull(v) || strings.TrimSpace(v.Value) == "" {
			return nil, p.errf(v, "each entry of %s must be a path or a glob pattern, got %s", what, got(v))
		}
		p.use(v, v.Value)
		out = append(out, strings.TrimSpace(v.Value))
	}
	return out, nil
}

// cache reads cache: {cache_paths: [...]}.
func (p *parser) cache(w *Workflow, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "cache must be a mapping with cache_paths, got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return err
	}
	for _, kv := range entries {
		if kv.key.Value != "cache_paths" {
			w.ignore("cache." + kv.key.Value)
			continue
		}
		if w.CachePaths, err = p.strList(kv.val, "cache.cache_paths"); err != nil {
			return err
		}
	}
	return nil
}

// publishing reads publishing: scripts and email are run, every other
// publisher is listed in w.Ignored.
func (p *parser) publishing(w *Workflow, key, val *yaml.Node) *Error {
	n := resolve(val)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, "publishing must be a mapping of publishers (scripts, email, ...), got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return err
	}
	for _, kv := range entries {
		switch kv.key.Value {
		case "scripts":
			w.Publishing.Scripts, err = p.scriptList(w, kv.key, kv.val, "publishing.scripts")
		case "email":
			w.Publishing.Email, err = p.email(w, kv.val)
		default:
			w.ignore("publishing." + kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) email(w *Workflow, val *yaml.Node) (*Email, *Error) {
	n := resolve(val)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "publishing.email must be a mapping with recipients, got %s", got(n))
	}
	entries, err := p.pairs(n)
	if err != nil {
		return nil, err
	}
	e := &Email{Success: true, Failure: true}
	for _, kv := range entries {
		switch kv.key.Value {
		case "recipients":
			list, err := p.strList(kv.val, "publishing.email.recipients")
			if err != nil {
				return nil, err
			}
			for i, r := range list {
				if p.deferred(resolve(resolve(kv.val).Content[i])) {
					continue // checked when a build gives the input
				}
				if _, perr := mail.ParseAddress(r); perr != nil || strings.ContainsAny(r, "\r\n") {
					return nil, p.errf(resolve(kv.val).Content[i], "publishing.email.recipients: %q is not an email address", r)
				}
			}
			e.Recipients = list
		case "notify":
			m := resolve(kv.val)
			if isNull(m) {
				continue
			}
			if m.Kind != yaml.MappingNode {
				return nil, p.errf(m, "publishing.email.notify must be a mapping with success and failure, got %s", got(m))
			}
			list, err := p.pairs(m)
			if err != nil {
				return nil, err
			}
			for _, nv := range list {
				switch nv.key.Value {
				case "success":
					e.Success, err = p.boolean(nv.val, "publishing.email.notify.success")
				case "failure":
					e.Failure, err = p.boolean(nv.val, "publishing.email.notify.failure")
				default:
					w.ignore("publishing.email.notify." + nv.key.Value)
				}
				if err != nil {
					return nil, err
				}
			}
		default:
			w.ignore("publishing.email." + kv.key.Value)
		}
	}
	if len(e.Recipients) == 0 {
		return nil, p.errf(n, "publishing.email has no recipients; expected recipients: a list of email addresses")
	}
	return e, nil
}
