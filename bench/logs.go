package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// The logs mode measures a verbose step: 1,000,000 short lines (about
// 18 MB) written to the build log, against the same command writing to a
// file in the same machine, and checks that every line is stored in order.

// logLines is how many lines the verbose step prints.
const logLines = 1000000

// logsWorkflowFile runs the command twice: into a file, then into the log.
const logsWorkflowFile = `workflows:
  verbose:
    max_build_duration: 10
    scripts:
      - name: to a file
        script: seq 1 1000000 | sed 's/^/line number /' > "$HOME/lines.txt"
      - name: to the log
        script: seq 1 1000000 | sed 's/^/line number /'
`

// Steps of the verbose workflow (after the runner's two).
const (
	stepToFile = 2
	stepToLog  = 3
)

// logsSample is one verbose build.
type logsSample struct {
	toFile, toLog time.Duration // the steps' durations, as the builder measured them
	total         time.Duration // build start to end, as the client saw it
	// CPU the build cost the server process itself (link, log book, store,
	// the API's answers to the bench's polling) and, for the host driver,
	// its descendants (the machine: builder, git, both steps' seq and sed),
	// from /proc/PID/stat. A sandbox machine's processes are reaped
	// inside its container, not all of them into the server's count.
	serverCPU, machineCPU time.Duration
	err                   error // lines missing, out of order or the build failed
}

func runLogs(ctx context.Context, o options) (err error) {
	tmp, err := os.MkdirTemp("", "hangar-bench-logs-")
	if err != nil {
		return err
	}
	defer removeTemp(o, tmp, &err)
	bin, err := buildBinary(ctx, filepath.Join(tmp, "bin"))
	if err != nil {
		return err
	}
	repo, err := makeRepo(ctx, filepath.Join(tmp, "git"), logsWorkflowFile)
	if err != nil {
		return err
	}
	load0 := loadavg()
	for _, d := range o.drivers {
		if err := benchLogs(ctx, o, bin, repo, filepath.Join(tmp, d), d); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	}
	fmt.Fprintf(os.Stdout, "Machine: %d CPUs; load average (1/5/15 min) %s at the start, %s at the end.\n", runtime.NumCPU(), load0, loadavg())
	return nil
}

func benchLogs(ctx context.Context, o options, bin, repo, dir, driver string) (err error) {
	s, err := startWithApp(ctx, bin, driver, dir, max(o.parallel, 1), repo)
	if err != nil {
		return err
	}
	defer s.finish(&err)
	var alone []logsSample
	for i := 0; i < o.runs; i++ {
		smp := verboseBuild(ctx, s)
		if smp.err != nil {
			return smp.err
		}
		logf("%s: build %d/%d: to a file %v, to the log %v, whole build %v, CPU server %v, machine %v", driver, i+1, o.runs, ms(smp.toFile), ms(smp.toLog), ms(smp.total), ms(smp.serverCPU), ms(smp.machineCPU))
		alone = append(alone, smp)
	}
	logf("%s: %d verbose builds at once", driver, o.parallel)
	together := make([]logsSample, o.parallel)
	var wg sync.WaitGroup
	for i := range together {
		wg.Add(1)
		go func() {
			defer wg.Done()
			together[i] = verboseBuild(ctx, s)
		}()
	}
	wg.Wait()
	for _, smp := range together {
		if smp.err != nil {
			return smp.err
		}
	}
	printLogsReport(os.Stdout, driver, alone, together)
	return nil
}

// verboseBuild runs one verbose build and checks its log.
func verboseBuild(ctx context.Context, s *server) logsSample {
	t0 := time.Now()
	cpu0, _ := procCPU(s.pid())
	b, err := s.startBuild(ctx, "verbose")
	if err != nil {
		return logsSample{err: err}
	}
	b, err = s.waitBuild(ctx, b.ID, 20*time.Millisecond, 10*time.Minute, func(*build.Build) bool { return false })
	if err != nil {
		return logsSample{err: err}
	}
	smp := logsSample{total: time.Since(t0)}
	cpu1, _ := procCPU(s.pid())
	smp.serverCPU = cpu1.self - cpu0.self
	if b.Status != build.Finished {
		return logsSample{err: fmt.Errorf("build %d %s: %s", b.ID, b.Status, b.Message)}
	}
	smp.toFile = time.Duration(*b.Steps[stepToFile].DurationMS) * time.Millisecond
	smp.toLog = time.Duration(*b.Steps[stepToLog].DurationMS) * time.Millisecond
	smp.err = checkLines(ctx, s, b.ID)
	// The machine's processes have been reaped by now (the build ended
	// before its log was read).
	if s.driver == "host" {
		cpu2, _ := procCPU(s.pid())
		smp.machineCPU = cpu2.children - cpu0.children
	}
	return smp
}

// checkLines reads build id's whole log through the API and checks that
// the verbose step's lines are all there, in order.
func checkLines(ctx context.Context, s *server, id int64) error {
	var after int64
	next := 1
	for {
		lines, err := s.api.Logs(ctx, id, after, 100000)
		if err != nil {
			return fmt.Errorf("build %d: read log: %w", id, err)
		}
		if len(lines) == 0 {
			break
		}
		for _, l := range lines {
			if l.Step != stepToLog {
				continue
			}
			if want := fmt.Sprintf("line number %d", next); l.Text != want {
				return fmt.Errorf("build %d: log line %d is %q, want %q", id, l.Seq, l.Text, want)
			}
			next++
		}
		after = lines[len(lines)-1].Seq
	}
	if next-1 != logLines {
		return fmt.Errorf("build %d: the log holds %d of %d lines", id, next-1, logLines)
	}
	return nil
}

func printLogsReport(w io.Writer, driver string, alone, together []logsSample) {
	fmt.Fprintf(w, "\n### Verbose step, %s driver: %d lines (about 18 MB) to the build log\n\n", driver, logLines)
	fmt.Fprintln(w, "| run | builds | step to a file (median) | step to the log (median, max) | ratio (median) | build, start to end (median) | CPU per build: server, machine (median) | lines stored in order |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	row := func(name string, ss []logsSample) {
		var file, log, total, server, machine []time.Duration
		var ratios []float64
		for _, s := range ss {
			file, log, total = append(file, s.toFile), append(log, s.toLog), append(total, s.total)
			server, machine = append(server, s.serverCPU), append(machine, s.machineCPU)
			ratios = append(ratios, float64(s.toLog)/float64(max(s.toFile, time.Millisecond)))
		}
		slices.Sort(ratios)
		cpu := "–" // builds at once share the process
		if len(ss) > 0 && name == "one at a time" {
			cpu = fmt.Sprintf("%s, %s", ms(statsOf(server).med), ms(statsOf(machine).med))
			if driver != "host" {
				cpu = fmt.Sprintf("%s, –", ms(statsOf(server).med))
			}
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s, %s | %.2fx | %s | %s | all %d, every build |\n", name, len(ss),
			ms(statsOf(file).med), ms(statsOf(log).med), ms(statsOf(log).max), ratios[len(ratios)/2], ms(statsOf(total).med), cpu, logLines)
	}
	row("one at a time", alone)
	row("at once", together)
	fmt.Fprintln(w)
}
