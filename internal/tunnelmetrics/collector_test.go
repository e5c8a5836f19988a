package tunnelmetrics

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

type fixedStats portforward.Stats

func (s fixedStats) Stats() portforward.Stats { return portforward.Stats(s) }

// A tunnel of two ports: 5432 has a ready session that carried traffic in slot 0 and none in slot 1; 8080
// has no ready session because its target is offline.
var testStats = portforward.Stats{
	Ready:             false,
	ParkedConnections: 3,
	Ports: []portforward.PortStats{{
		Port:            portforward.PortPair{Local: 15432, Remote: 5432},
		SessionEnds:     map[string]uint64{"idle_timeout": 2},
		Resets:          map[string]uint64{"session_lost": 4, "local_gone": 1},
		OpenConnections: 7,
		Destination:     portforward.DestinationReachable,
		ConnectSeconds: portforward.Histogram{Bounds: []float64{0.001, 1}, Counts: []uint64{5, 2, 1},
			Count: 8, Sum: 3.25},
		Sessions: []portforward.SessionStats{{
			Port: portforward.PortPair{Local: 15432, Remote: 5432}, Slot: 0, HasSession: true, SessionID: "s-1",
			State: session.StateReady, Stalled: true, OpenStreams: 7, Streams: 40, Resumes: 1, TotalResumes: 6,
			HeldBytes: 1024, StalledResets: 2, ConnectErrors: 9, Starts: 3,
			Channel: datachannel.Stats{BytesSent: 100, BytesReceived: 200, FramesSent: 10, Retransmits: 11,
				DroppedFull: 12, DroppedBeyondHorizon: 13, SRTT: 250 * time.Millisecond},
		}, {
			Port: portforward.PortPair{Local: 15432, Remote: 5432}, Slot: 1, State: session.StateClosed,
		}},
	}, {
		Port:            portforward.PortPair{Local: 18080, Remote: 8080},
		SessionEnds:     map[string]uint64{},
		Resets:          map[string]uint64{},
		Destination:     portforward.DestinationUnknown,
		LastErrorReason: "TargetNotConnected",
		ConnectSeconds:  portforward.Histogram{Bounds: []float64{0.001, 1}, Counts: []uint64{0, 0, 0}},
	}},
}

// family is one metric family as the tunnel's /metrics serves it. Samples are "label=value,... value"
// (labels in the exposition's order, quotes dropped), each list sorted; a histogram's samples are its <name>_count,
// its buckets and sums those of <name>_bucket and <name>_sum.
type family struct {
	typ                    string
	header                 []string // the # HELP and # TYPE lines
	samples, buckets, sums []string
}

// gather serves the collector of s on a pedantic registry (which also fails on a metric whose description
// Describe does not list) and parses the text exposition.
func gather(t *testing.T, s portforward.Stats) map[string]*family {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedStats(s)))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	out := map[string]*family{}
	get := func(name string) *family {
		if out[name] == nil {
			out[name] = &family{}
		}
		return out[name]
	}
	histogram := func(name string) bool { return out[name] != nil && out[name].typ == "histogram" }
	for line := range strings.Lines(rec.Body.String()) {
		line = strings.TrimSpace(line)
		if f := strings.SplitN(line, " ", 4); len(f) == 4 && f[0] == "#" {
			get(f[2]).header = append(get(f[2]).header, line)
			if f[1] == "TYPE" {
				get(f[2]).typ = f[3]
			}
			continue
		}
		name, labels, value := line, "", ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			name, labels, value = line[:i], strings.ReplaceAll(line[i+1:j], `"`, ""), strings.TrimSpace(line[j+1:])
		} else {
			name, value, _ = strings.Cut(line, " ")
		}
		sample := labels + " " + value
		switch {
		case histogram(strings.TrimSuffix(name, "_bucket")):
			f := get(strings.TrimSuffix(name, "_bucket"))
			f.buckets = append(f.buckets, sample)
		case histogram(strings.TrimSuffix(name, "_count")):
			f := get(strings.TrimSuffix(name, "_count"))
			f.samples = append(f.samples, sample)
		case histogram(strings.TrimSuffix(name, "_sum")):
			f := get(strings.TrimSuffix(name, "_sum"))
			f.sums = append(f.sums, sample)
		default:
			get(name).samples = append(get(name).samples, sample)
		}
	}
	for _, f := range out {
		sort.Strings(f.samples)
		sort.Strings(f.buckets)
		sort.Strings(f.sums)
	}
	return out
}

// The names, help texts, types and label names are a contract: the chart's dashboard and alerts query
// them. testdata/contract.txt holds the # HELP and # TYPE lines.
func TestCollectorFamilies(t *testing.T) {
	labels := map[string]string{
		"ssmtunnel_ready":                       "",
		"ssmtunnel_connections_parked":          "",
		"ssmtunnel_connect_duration_seconds":    "port",
		"ssmtunnel_session_closed_total":        "port,reason",
		"ssmtunnel_connections_reset_total":     "port,reason",
		"ssmtunnel_connections_open":            "port",
		"ssmtunnel_port_last_error":             "port,reason",
		"ssmtunnel_destination_state":           "port,state",
		"ssmtunnel_session_state":               "port,session,state",
		"ssmtunnel_session_stalled":             "port,session",
		"ssmtunnel_session_starts_total":        "port,session",
		"ssmtunnel_resumes_total":               "port,session",
		"ssmtunnel_streams_open":                "port,session",
		"ssmtunnel_streams_total":               "port,session",
		"ssmtunnel_bytes_total":                 "direction,port,session",
		"ssmtunnel_frames_sent_total":           "port,session",
		"ssmtunnel_retransmits_total":           "port,session",
		"ssmtunnel_frames_dropped_total":        "port,session",
		"ssmtunnel_rtt_seconds":                 "port,session",
		"ssmtunnel_connect_errors_total":        "port,session",
		"ssmtunnel_stream_held_bytes":           "port,session",
		"ssmtunnel_stalled_stream_resets_total": "port,session",
	}
	b, err := os.ReadFile(filepath.Join("testdata", "contract.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, testStats)
	var header []string
	for name, f := range got {
		header = append(header, f.header...)
		want, ok := labels[name]
		if !ok {
			t.Errorf("%s is exported but not in the contract", name)
		}
		for _, s := range f.samples {
			var names []string
			if l, _, _ := strings.Cut(s, " "); l != "" {
				for _, kv := range strings.Split(l, ",") {
					n, _, _ := strings.Cut(kv, "=")
					names = append(names, n)
				}
			}
			if l := strings.Join(names, ","); l != want {
				t.Errorf("%s has labels %q, want %q", name, l, want)
			}
		}
	}
	for name := range labels {
		if got[name] == nil || len(got[name].samples) == 0 {
			t.Errorf("%s is not exported", name)
		}
	}
	sort.Strings(header)
	want := strings.Split(strings.TrimSpace(string(b)), "\n")
	sort.Strings(want)
	if !slices.Equal(header, want) {
		t.Errorf("# HELP and # TYPE lines differ from testdata/contract.txt:\n%s\nwant\n%s", strings.Join(header, "\n"), strings.Join(want, "\n"))
	}
}

// Every value comes from the snapshot: reasons and states without a count are exported as zeros, a slot
// without a session is in state none, the slot's counters are its cumulative ones, and the histogram's
// buckets are cumulative with the count as its +Inf bucket.
func TestCollectorValues(t *testing.T) {
	got := gather(t, testStats)
	const pg, web = "port=15432:5432", "port=18080:8080"
	s0, s1 := pg+",session=0", pg+",session=1"
	check := func(name string, g []string, want ...string) {
		t.Helper()
		sort.Strings(want)
		if !slices.Equal(g, want) {
			t.Errorf("%s:\n  got  %q\n  want %q", name, g, want)
		}
	}
	sample := func(name string, want ...string) { t.Helper(); check(name, got[name].samples, want...) }
	sample("ssmtunnel_ready", " 0")
	sample("ssmtunnel_connections_parked", " 3")
	sample("ssmtunnel_connections_open", pg+" 7", web+" 0")
	sample("ssmtunnel_port_last_error", web+",reason=TargetNotConnected 1")
	sample("ssmtunnel_destination_state", pg+",state=reachable 1", pg+",state=unreachable 0", pg+",state=unknown 0",
		web+",state=reachable 0", web+",state=unreachable 0", web+",state=unknown 1")
	var ends, resets []string
	for _, port := range []string{pg, web} {
		for _, r := range portforward.SessionEndReasons() {
			v := "0"
			if port == pg && r == "idle_timeout" {
				v = "2"
			}
			ends = append(ends, port+",reason="+r+" "+v)
		}
		for _, r := range portforward.ResetReasons() {
			v := map[string]string{"session_lost": "4", "local_gone": "1"}[r]
			if port != pg || v == "" {
				v = "0"
			}
			resets = append(resets, port+",reason="+r+" "+v)
		}
	}
	sample("ssmtunnel_session_closed_total", ends...)
	sample("ssmtunnel_connections_reset_total", resets...)
	sample("ssmtunnel_session_state",
		s0+",state=none 0", s0+",state=connecting 0", s0+",state=ready 1", s0+",state=resuming 0", s0+",state=closed 0",
		s1+",state=none 1", s1+",state=connecting 0", s1+",state=ready 0", s1+",state=resuming 0", s1+",state=closed 0")
	sample("ssmtunnel_session_stalled", s0+" 1", s1+" 0")
	sample("ssmtunnel_session_starts_total", s0+" 3", s1+" 0")
	sample("ssmtunnel_resumes_total", s0+" 6", s1+" 0")
	sample("ssmtunnel_streams_open", s0+" 7", s1+" 0")
	sample("ssmtunnel_streams_total", s0+" 40", s1+" 0")
	sample("ssmtunnel_bytes_total", "direction=sent,"+s0+" 100", "direction=received,"+s0+" 200",
		"direction=sent,"+s1+" 0", "direction=received,"+s1+" 0")
	sample("ssmtunnel_frames_sent_total", s0+" 10", s1+" 0")
	sample("ssmtunnel_retransmits_total", s0+" 11", s1+" 0")
	sample("ssmtunnel_frames_dropped_total", s0+" 25", s1+" 0")
	sample("ssmtunnel_rtt_seconds", s0+" 0.25", s1+" 0")
	sample("ssmtunnel_connect_errors_total", s0+" 9", s1+" 0")
	sample("ssmtunnel_stream_held_bytes", s0+" 1024", s1+" 0")
	sample("ssmtunnel_stalled_stream_resets_total", s0+" 2", s1+" 0")

	h := got["ssmtunnel_connect_duration_seconds"]
	sample("ssmtunnel_connect_duration_seconds", pg+" 8", web+" 0")
	check("ssmtunnel_connect_duration_seconds_sum", h.sums, pg+" 3.25", web+" 0")
	check("ssmtunnel_connect_duration_seconds_bucket", h.buckets,
		pg+",le=0.001 5", pg+",le=1 7", pg+",le=+Inf 8", web+",le=0.001 0", web+",le=1 0", web+",le=+Inf 0")
}
