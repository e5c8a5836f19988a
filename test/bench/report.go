package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is the JSON file, and the source of the Markdown one.
type report struct {
	Schema          int       `json:"schema"`
	Date            string    `json:"date"`
	Commit          string    `json:"commit"`
	Dirty           bool      `json:"dirty"`
	Quick           bool      `json:"quick"`
	Reps            int       `json:"reps"`
	Scenarios       []string  `json:"scenarios"`
	Machine         machine   `json:"machine"`
	DurationSeconds float64   `json:"duration_seconds"`
	Results         []result  `json:"results"`
	Targets         []target  `json:"targets"`
	Errors          []string  `json:"errors"`
	Notes           []string  `json:"notes"`
	started         time.Time `json:"-"`
}

type machine struct {
	CPUModel  string `json:"cpu_model"`
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	MemTotal  string `json:"mem_total"`
	LoadAvg   string `json:"loadavg_at_start"`
	// Stalls is the host-stall probe taken before the scenarios (see probeStalls).
	Stalls stallProbe `json:"stalls_at_start"`
}

// stallProbe is how much of a busy loop's wall time passed in gaps longer than stallGap: time the host did
// not run this process although it was runnable and nothing else of the benchmark was running.
type stallProbe struct {
	Seconds        float64 `json:"probe_seconds"`
	StalledSeconds float64 `json:"stalled_seconds"`
	Gaps           int     `json:"gaps"`
	LongestMs      float64 `json:"longest_gap_ms"`
}

const stallGap = 5 * time.Millisecond

// probeStalls spins on one thread for d and sums the gaps between consecutive clock reads that exceed
// stallGap. A host that runs the process whenever it is runnable shows none; on a shared, overloaded host
// gaps of hundreds of milliseconds can add up to half the wall time, and every figure of the run carries
// them (direct TCP as much as the tunnel, when runs last equally long).
func probeStalls(d time.Duration) stallProbe {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var p stallProbe
	start := time.Now()
	last := start
	for {
		now := time.Now()
		if gap := now.Sub(last); gap > stallGap {
			p.Gaps++
			p.StalledSeconds += gap.Seconds()
			p.LongestMs = max(p.LongestMs, float64(gap.Microseconds())/1000)
		}
		last = now
		if now.Sub(start) >= d {
			p.Seconds = now.Sub(start).Seconds()
			return p
		}
	}
}

// result is one figure: a measurement of one variant in one setting, summarised over the repetitions.
type result struct {
	Scenario string `json:"scenario"`
	// Name is scenario/setting/.../variant/metric, unique in the run.
	Name    string         `json:"name"`
	Unit    string         `json:"unit"`
	Params  map[string]any `json:"params,omitempty"`
	Derived bool           `json:"derived,omitempty"` // computed from paired measurements of other results
	Stats   summary        `json:"stats"`
}

// target is one of the performance targets (targetSpecs) with the measured value and whether it was met.
type target struct {
	Name   string   `json:"name"`
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit"`
	Target string   `json:"target"`
	Met    bool     `json:"met"`
	Detail string   `json:"detail"`
}

func newReport(root string, o options) *report {
	r := &report{Schema: 1, Quick: o.quick, Reps: o.reps, Scenarios: o.scenarios, started: time.Now().UTC(),
		Results: []result{}, Targets: []target{}, Errors: []string{}, Notes: []string{}}
	r.Date = r.started.Format(time.RFC3339)
	r.Commit = strings.TrimSpace(gitOut(root, "rev-parse", "--short=12", "HEAD"))
	if r.Commit == "" {
		r.Commit = "unknown"
	}
	r.Dirty = strings.TrimSpace(gitOut(root, "status", "--porcelain", "--untracked-files=no", "--", "tunnel", "cmd", "test/bench", "go.mod", "go.sum")) != ""
	r.Machine = machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				r.Machine.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.Machine.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				r.Machine.MemTotal = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.Machine.LoadAvg = strings.TrimSpace(string(b))
	}
	return r
}

func gitOut(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// add records a figure.
func (r *report) add(scenario, name, unit string, samples []float64, params map[string]any) {
	r.Results = append(r.Results, result{Scenario: scenario, Name: name, Unit: unit, Params: params, Stats: summarize(samples)})
}

// addDerived records a figure computed from paired samples of other figures.
func (r *report) addDerived(scenario, name, unit string, samples []float64) {
	r.Results = append(r.Results, result{Scenario: scenario, Name: name, Unit: unit, Derived: true, Stats: summarize(samples)})
}

func (r *report) find(name string) (result, bool) {
	for _, x := range r.Results {
		if x.Name == name {
			return x, true
		}
	}
	return result{}, false
}

// targetSpec is one performance target: which figure, and the comparison it must pass.
type targetSpec struct {
	name, result, unit, cmp string
	bound                   float64
	scale                   float64 // multiply the result's median by this (unit change)
	detail                  string
}

// targetSpecs lists the performance targets, in report order. The figures are medians over the repetitions;
// ratios are medians of per-repetition ratios of interleaved measurements.
var targetSpecs = []targetSpec{
	{name: "pageload: mux vs direct at 40 ms RTT, pacing none (b)/(a)", result: "pageload/pacing-none/rtt40ms/ratio-mux-over-direct", unit: "x", cmp: "<=", bound: 1.5,
		detail: "(b) ssmtunnel multiplexed within 1.5x of (a) direct"},
	{name: "pageload: basic vs mux at 40 ms RTT, pacing none (c)/(b)", result: "pageload/pacing-none/rtt40ms/ratio-basic-over-mux", unit: "x", cmp: ">=", bound: 10,
		detail: "the seed's effect: basic mode at least 10x slower than multiplexed"},
	{name: "pageload: pool of 4 vs one session at 40 ms RTT, pacing agent (b)/(d)", result: "pageload/pacing-agent/rtt40ms/ratio-mux-over-pool4", unit: "x", cmp: ">=", bound: 3,
		detail: "(d) the 4-session pool at least 3x faster than (b)"},
	{name: "bulk: one stream upload vs direct loopback TCP, pacing none", result: "bulk/pacing-none/1-stream/upload/ratio-tunnel-over-direct", unit: "fraction", cmp: ">=", bound: 0.25,
		detail: "tunnel MB/s over direct MB/s, interleaved"},
	{name: "bulk: one stream download vs direct loopback TCP, pacing none", result: "bulk/pacing-none/1-stream/download/ratio-tunnel-over-direct", unit: "fraction", cmp: ">=", bound: 0.25,
		detail: "tunnel MB/s over direct MB/s, interleaved"},
	{name: "bulk: 8 streams upload over a pool of 8 sessions, pacing agent", result: "bulk/pacing-agent/8-streams/upload/pool8/MBps", unit: "MB/s", cmp: ">=", bound: 6,
		detail: "aggregate MB/s (1 MB = 10^6 bytes)"},
	{name: "bulk: 8 streams download over a pool of 8 sessions, pacing agent", result: "bulk/pacing-agent/8-streams/download/pool8/MBps", unit: "MB/s", cmp: ">=", bound: 6,
		detail: "aggregate MB/s (1 MB = 10^6 bytes)"},
	{name: "latency: p50 added at concurrency 1, 0 ms RTT", result: "latency/rtt0ms/c1/added-p50", unit: "µs", cmp: "<=", bound: 150,
		detail: "tunnel p50 minus direct p50, 1 KiB echo, pacing none"},
	{name: "latency: p99 added at concurrency 100, 0 ms RTT", result: "latency/rtt0ms/c100/added-p99", unit: "ms", cmp: "<=", bound: 2, scale: 1e-3,
		detail: "tunnel p99 minus direct p99, 1 KiB echo, pacing none"},
	{name: "scale: RSS with 10,000 idle connections", result: "scale/idle-10000/rss", unit: "MB", cmp: "<=", bound: 100,
		detail: "VmRSS of the ssmtunnel process (MB = 2^20 bytes)"},
	{name: "head-of-line: others' throughput with one stalled reader", result: "hol/ratio-stalled-over-clean", unit: "fraction", cmp: ">=", bound: 0.8,
		detail: "50 downloads' aggregate rate with one stalled stream over the rate without it"},
	{name: "cpu: CPU-seconds per GB carried, pacing none", result: "cpu/pacing-none/cpu-seconds-per-GB", unit: "CPU-s/GB", cmp: "report",
		detail: "utime+stime of the ssmtunnel process over the bulk runs, per 10^9 bytes"},
}

func (r *report) computeTargets() {
	r.Targets = r.Targets[:0]
	for _, ts := range targetSpecs {
		t := target{Name: ts.name, Unit: ts.unit, Detail: ts.detail}
		if ts.cmp == "report" {
			t.Target = "reported"
		} else {
			t.Target = fmt.Sprintf("%s %g", ts.cmp, ts.bound)
		}
		res, ok := r.find(ts.result)
		if !ok || math.IsNaN(res.Stats.Median) {
			t.Detail += "; not measured in this run"
			r.Targets = append(r.Targets, t)
			continue
		}
		v := res.Stats.Median
		if ts.scale != 0 {
			v *= ts.scale
		}
		v = roundSig(v, 4)
		t.Value = &v
		switch ts.cmp {
		case "<=":
			t.Met = v <= ts.bound
		case ">=":
			t.Met = v >= ts.bound
		case "report":
			t.Met = true
		}
		r.Targets = append(r.Targets, t)
	}
}

func roundSig(v float64, sig int) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	p := math.Pow(10, float64(sig)-math.Ceil(math.Log10(math.Abs(v))))
	return math.Round(v*p) / p
}

func (r *report) write(dir string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	base := r.started.Format("2006-01-02") + "-" + r.Commit
	if r.Quick {
		base += "-quick"
	}
	jsonPath := filepath.Join(dir, base+".json")
	mdPath := filepath.Join(dir, base+".md")
	// NaN is not JSON: summaries of failed measurements are written with null medians.
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(mdPath, []byte(r.markdown()), 0o644); err != nil {
		return "", "", err
	}
	return jsonPath, mdPath, nil
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// writeTable writes a Markdown table and the blank line that ends it.
func writeTable(sb *strings.Builder, header []string, rows [][]string) {
	line := func(cells []string) { sb.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	line(header)
	sb.WriteString(strings.Repeat("|---", len(header)) + "|\n")
	for _, r := range rows {
		line(r)
	}
	sb.WriteString("\n")
}

func (r *report) markdown() string {
	var sb strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	w("# ssmtunnel benchmark %s\n\n", r.Date)
	dirty := ""
	if r.Dirty {
		dirty = " (with uncommitted changes)"
	}
	w("- commit `%s`%s; %d repetitions per measurement; quick=%v; run took %.0f s\n", r.Commit, dirty, r.Reps, r.Quick, r.DurationSeconds)
	w("- machine: %s, %d cores, %s, kernel %s, %s; load average at start %s\n", r.Machine.CPUModel, r.Machine.Cores, r.Machine.MemTotal, r.Machine.Kernel, r.Machine.GoVersion, r.Machine.LoadAvg)
	st := r.Machine.Stalls
	w("- host stalls before the run: a busy loop was not run for %.2f s of %.1f s (%d gaps over %s, longest %.0f ms)\n", st.StalledSeconds, st.Seconds, st.Gaps, stallGap, st.LongestMs)
	w("- reproduce: `make bench`%s\n\n", map[bool]string{true: " BENCH_ARGS=-quick", false: ""}[r.Quick])

	w("## Targets (issue 4)\n\n")
	var rows [][]string
	for _, t := range r.Targets {
		val, met := "not measured", "**not measured**"
		if t.Value != nil {
			val, met = fmtNum(*t.Value), "**missed**"
			if t.Met {
				met = "met"
			}
		}
		rows = append(rows, []string{t.Name, val, t.Unit, t.Target, met})
	}
	writeTable(&sb, []string{"target", "value", "unit", "target", "met"}, rows)
	var order []string
	for _, x := range r.Results {
		if !slices.Contains(order, x.Scenario) {
			order = append(order, x.Scenario)
		}
	}
	for _, scen := range order {
		w("## %s\n\n", scen)
		rows = rows[:0]
		for _, x := range r.Results {
			if x.Scenario != scen {
				continue
			}
			name := x.Name
			if x.Derived {
				name = "*" + name + "*"
			}
			rows = append(rows, []string{name, x.Unit, fmtNum(x.Stats.Median), fmtNum(x.Stats.Min), fmtNum(x.Stats.Max),
				fmtNum(x.Stats.SpreadPct) + "%", fmt.Sprint(x.Stats.N)})
		}
		writeTable(&sb, []string{"measurement", "unit", "median", "min", "max", "spread", "n"}, rows)
	}
	if len(r.Notes) > 0 {
		w("\n## Notes\n\n")
		for _, n := range r.Notes {
			w("- %s\n", n)
		}
	}
	if len(r.Errors) > 0 {
		w("\n## Errors\n\n")
		for _, e := range r.Errors {
			w("- %s\n", strings.ReplaceAll(e, "\n", " "))
		}
	}
	return sb.String()
}

// MarshalJSON writes NaN as null, which encoding/json refuses.
func (s summary) MarshalJSON() ([]byte, error) {
	type alias struct {
		Median    *float64  `json:"median"`
		Min       *float64  `json:"min"`
		Max       *float64  `json:"max"`
		SpreadPct *float64  `json:"spread_pct"`
		N         int       `json:"n"`
		Samples   []float64 `json:"samples"`
	}
	p := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		v = roundSig(v, 6)
		return &v
	}
	a := alias{Median: p(s.Median), Min: p(s.Min), Max: p(s.Max), SpreadPct: p(s.SpreadPct), N: s.N, Samples: []float64{}}
	for _, v := range s.Samples {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			a.Samples = append(a.Samples, roundSig(v, 6))
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(a); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}
