package tunnel

import (
	"runtime/debug"
	"testing"
)

func TestResolveBuild(t *testing.T) {
	vcs := func(main string, settings ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/ssmtunnel/ssmtunnel", Version: main}}
		for i := 0; i+1 < len(settings); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name                  string
		version, commit, date string
		bi                    *debug.BuildInfo
		want                  Build
	}{
		{
			name:    "stamped by make release: the build info is not consulted",
			version: "v0.2.0", commit: "fedcba987654", date: "2026-05-01T10:00:00Z",
			bi:   vcs("v0.1.0", "vcs.revision", rev, "vcs.time", "2020-01-01T00:00:00Z", "vcs.modified", "true"),
			want: Build{Version: "v0.2.0", Commit: "fedcba987654", Date: "2026-05-01T10:00:00Z"},
		},
		{
			name:    "go install @v0.2.0: the module version, no VCS",
			version: "dev",
			bi:      vcs("v0.2.0"),
			want:    Build{Version: "v0.2.0"},
		},
		{
			name:    "go build in a clean checkout: revision shortened to 12, commit time",
			version: "dev",
			bi:      vcs("(devel)", "vcs", "git", "vcs.revision", rev, "vcs.time", "2026-05-01T10:00:00Z", "vcs.modified", "false"),
			want:    Build{Version: "dev", Commit: "0123456789ab", Date: "2026-05-01T10:00:00Z"},
		},
		{
			name:    "go build in a modified checkout: -dirty, and the pseudo-version the go command derives",
			version: "dev",
			bi: vcs("v0.0.0-20260501100000-0123456789ab+dirty",
				"vcs.revision", rev, "vcs.time", "2026-05-01T10:00:00Z", "vcs.modified", "true"),
			want: Build{Version: "v0.0.0-20260501100000-0123456789ab+dirty", Commit: "0123456789ab-dirty", Date: "2026-05-01T10:00:00Z"},
		},
		{
			name:    "only Version stamped (make build): commit and date from VCS",
			version: "v0.2.0-3-gabcdef1",
			bi:      vcs("(devel)", "vcs.revision", rev, "vcs.time", "2026-05-01T10:00:00Z"),
			want:    Build{Version: "v0.2.0-3-gabcdef1", Commit: "0123456789ab", Date: "2026-05-01T10:00:00Z"},
		},
		{
			name:    "a time in another zone is reported in UTC",
			version: "dev",
			bi:      vcs("", "vcs.time", "2026-05-01T12:00:00+02:00"),
			want:    Build{Version: "dev", Date: "2026-05-01T10:00:00Z"},
		},
		{
			name:    "an unparsable time is kept as recorded",
			version: "dev",
			bi:      vcs("", "vcs.time", "yesterday"),
			want:    Build{Version: "dev", Date: "yesterday"},
		},
		{
			name:    "a short revision (another VCS) is kept whole",
			version: "dev",
			bi:      vcs("(devel)", "vcs", "hg", "vcs.revision", "1a2b3c"),
			want:    Build{Version: "dev", Commit: "1a2b3c"},
		},
		{
			name:    "go run or go test: (devel), nothing recorded",
			version: "dev",
			bi:      vcs("(devel)"),
			want:    Build{Version: "dev"},
		},
		{
			name:    "no build info at all",
			version: "dev",
			want:    Build{Version: "dev"},
		},
		{
			name: "Version stamped empty is still reported as dev",
			bi:   vcs(""),
			want: Build{Version: "dev"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolveBuild(tc.version, tc.commit, tc.date, tc.bi); got != tc.want {
				t.Errorf("resolveBuild(%q, %q, %q) = %+v, want %+v", tc.version, tc.commit, tc.date, got, tc.want)
			}
		})
	}
}

func TestBuildLine(t *testing.T) {
	full := Build{Version: "v0.2.0", Commit: "0123456789ab", Date: "2026-05-01T10:00:00Z"}
	for _, tc := range []struct {
		b       Build
		program string
		details []string
		want    string
	}{
		{full, "ssmtunnel", []string{"data channel client 1.2.764.0"},
			"ssmtunnel v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z, data channel client 1.2.764.0)"},
		{full, "ssm-emulator", nil, "ssm-emulator v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z)"},
		{Build{Version: "v0.2.0"}, "ssm-emulator", nil, "ssm-emulator v0.2.0"},
		{Build{Version: "v0.2.0"}, "ssmtunnel", []string{"data channel client 1.2.764.0"},
			"ssmtunnel v0.2.0 (data channel client 1.2.764.0)"},
		{Build{Version: "dev", Date: "2026-05-01T10:00:00Z"}, "ssmtunnel", nil, "ssmtunnel dev (2026-05-01T10:00:00Z)"},
		{full, "", nil, "v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z)"},
	} {
		if got := tc.b.Line(tc.program, tc.details...); got != tc.want {
			t.Errorf("%+v.Line(%q, %q) = %q, want %q", tc.b, tc.program, tc.details, got, tc.want)
		}
	}
	if got, want := full.String(), full.Line(""); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// The running test binary has build information; whatever it holds, BuildInfo never reports an empty version.
func TestBuildInfoOfThisBinary(t *testing.T) {
	if b := BuildInfo(); b.Version == "" {
		t.Errorf("BuildInfo() = %+v: empty version", b)
	}
}
