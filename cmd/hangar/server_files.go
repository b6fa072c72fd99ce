package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	hangarapp "github.com/hangar-ci/hangar/internal/app"
	"github.com/hangar-ci/hangar/internal/artifact"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/notify"
)

// fileFlags adds `hangar server`'s flags for artifacts, caches and email
// to f; the func it returns puts them into cfg, checked.
func fileFlags(f *pflag.FlagSet) func(cfg *hangarapp.Config) error {
	var artFile, artBuild, cacheMax string
	var artRet, cacheRet time.Duration
	var smtp notify.SMTP
	var pwFile string
	f.StringVar(&artFile, "artifact-max-size", build.FormatBytes(artifact.DefaultMaxFile), "largest artifact kept (e.g. 500MiB); larger ones are not uploaded, the build log says so")
	f.StringVar(&artBuild, "artifact-max-build-size", build.FormatBytes(artifact.DefaultMaxBuild), "most bytes of artifacts kept per build")
	f.DurationVar(&artRet, "artifact-retention", artifact.DefaultRetention, "how long artifacts are kept (then deleted by a background sweep)")
	f.StringVar(&cacheMax, "cache-max-size", build.FormatBytes(artifact.DefaultMaxCache), "largest cache archive kept per app and workflow (compressed); a larger one is not saved, the build log says so")
	f.DurationVar(&cacheRet, "cache-retention", artifact.DefaultCacheRetention, "how long a workflow's cache is kept after it was saved")
	f.StringVar(&smtp.Host, "smtp-host", "", "SMTP server that sends publishing.email (default: none, no email is sent)")
	f.IntVar(&smtp.Port, "smtp-port", 587, "port of --smtp-host")
	f.StringVar(&smtp.From, "smtp-from", "", "sender address of emails, e.g. \"Hangar <hangar@example.com>\"")
	f.StringVar(&smtp.Username, "smtp-user", "", "SMTP user name (the password in HANGAR_SMTP_PASSWORD or --smtp-password-file)")
	f.StringVar(&pwFile, "smtp-password-file", "", "file holding the SMTP password (default: HANGAR_SMTP_PASSWORD)")
	f.StringVar(&smtp.StartTLS, "smtp-starttls", notify.StartTLSAuto, "STARTTLS: auto (when offered), always (refuse to send without), never")
	return func(cfg *hangarapp.Config) error {
		var err error
		for _, s := range []struct {
			flag, v string
			to      *int64
		}{{"--artifact-max-size", artFile, &cfg.ArtifactMaxFile}, {"--artifact-max-build-size", artBuild, &cfg.ArtifactMaxBuild}, {"--cache-max-size", cacheMax, &cfg.CacheMaxSize}} {
			if *s.to, err = build.ParseBytes(s.v); err != nil || *s.to <= 0 {
				return fmt.Errorf("%s %q: want a size such as 500MiB or 2GiB", s.flag, s.v)
			}
		}
		if artRet <= 0 || cacheRet <= 0 {
			return fmt.Errorf("--artifact-retention and --cache-retention must be positive (e.g. 720h)")
		}
		cfg.ArtifactRetention, cfg.CacheRetention = artRet, cacheRet
		if smtp.Host == "" {
			return nil
		}
		if smtp.Username != "" {
			smtp.Password = os.Getenv("HANGAR_SMTP_PASSWORD")
			if pwFile != "" {
				data, err := os.ReadFile(pwFile)
				if err != nil {
					return fmt.Errorf("--smtp-password-file: %w", err)
				}
				smtp.Password = strings.TrimRight(string(data), "\r\n")
			}
		}
		if err := smtp.Check(); err != nil {
			return err
		}
		cfg.SMTP = &smtp
		return nil
	}
}
