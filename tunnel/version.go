// Package tunnel is the root of the Session Manager client library. It imports nothing from Kubernetes:
// the operator only ever starts the ssmtunnel binary built on it.
package tunnel

import (
	"runtime/debug"
	"strings"
	"time"
)

// Version, Commit and Date describe the release; `make release` stamps all three with
//
//	-ldflags "-X github.com/ssmtunnel/ssmtunnel/tunnel.Version=v0.2.0
//	          -X github.com/ssmtunnel/ssmtunnel/tunnel.Commit=0123456789ab
//	          -X github.com/ssmtunnel/ssmtunnel/tunnel.Date=2026-05-01T10:00:00Z"
//
// Read them through BuildInfo, which fills what was not stamped from what the go command recorded.
var (
	// Version is the release, e.g. v0.2.0; "dev" when not stamped.
	Version = "dev"
	// Commit is the git revision: 12 hex digits, "-dirty" appended when the tree had uncommitted changes.
	Commit = ""
	// Date is the commit's time in UTC, RFC 3339. The commit's rather than the build's, so that two builds of
	// one commit are byte-identical and a checksum can be reproduced.
	Date = ""
)

// Build says which source a binary was built from. Commit and Date are empty when unknown.
type Build struct {
	Version string
	Commit  string
	Date    string
}

// BuildInfo returns the stamped Version, Commit and Date, each one that was not stamped taken from the
// binary's embedded build information instead: `go install .../cmd/ssmtunnel@v0.2.0` records the module
// version v0.2.0, and `go build` in a git checkout records the revision, its time and whether the tree was
// modified (vcs.revision, vcs.time, vcs.modified), so neither reports a bare "dev".
func BuildInfo() Build {
	bi, _ := debug.ReadBuildInfo()
	return resolveBuild(Version, Commit, Date, bi)
}

// resolveBuild is BuildInfo without the globals and the running binary, so every fallback can be tested.
// bi may be nil (a binary built without module support).
func resolveBuild(version, commit, date string, bi *debug.BuildInfo) Build {
	b := Build{Version: version, Commit: commit, Date: date}
	if bi != nil {
		// "(devel)" is what the go command records for a main module built from its own directory without
		// VCS information: it says nothing "dev" does not.
		if (b.Version == "" || b.Version == "dev") && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		var revision, vcsTime string
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if b.Commit == "" && revision != "" {
			b.Commit = revision[:min(len(revision), 12)] // the length hack/release.sh stamps
			if modified {
				b.Commit += "-dirty"
			}
		}
		if b.Date == "" && vcsTime != "" {
			b.Date = vcsTime
			if t, err := time.Parse(time.RFC3339, vcsTime); err == nil {
				b.Date = t.UTC().Format(time.RFC3339) // in the stamp's form whatever zone the recorder used
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	return b
}

// Line is the version line of a program: its name, the version, and in parentheses the commit, its date and
// any details, e.g. "ssmtunnel v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z, data channel client
// 1.2.764.0)". Scripts may rely on the first two fields being the name and the version.
func (b Build) Line(program string, details ...string) string {
	var paren []string
	if b.Commit != "" {
		paren = append(paren, "commit "+b.Commit)
	}
	if b.Date != "" {
		paren = append(paren, b.Date)
	}
	paren = append(paren, details...)
	line := b.Version
	if program != "" {
		line = program + " " + line
	}
	if len(paren) > 0 {
		line += " (" + strings.Join(paren, ", ") + ")"
	}
	return line
}

// String is the version with its commit and date, without a program name, for logs.
func (b Build) String() string { return b.Line("") }
