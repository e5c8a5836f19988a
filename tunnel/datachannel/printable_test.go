package datachannel

import (
	"strings"
	"testing"
)

// The service's channel_closed text reaches logs and /readyz: it must not carry escape sequences or line
// breaks that forge log lines, and it is bounded.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"Your session timed out due to inactivity and has been terminated.": "Your session timed out due to inactivity and has been terminated.",
		"ok\n2026-01-01 level=INFO msg=forged":                              "ok 2026-01-01 level=INFO msg=forged",
		"\x1b[31mred\x1b[0m":                                                " [31mred [0m",
		"tab\tand\rreturn\u2028sep":                                         "tab and return sep",
		"bad \xff utf-8":                                                    "bad \uFFFD utf-8",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := printable(strings.Repeat("é", 1000)); len(got) > maxServiceText || !strings.HasPrefix(got, "é") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("a long message: %d bytes, want at most %d, cut on a rune boundary", len(got), maxServiceText)
	}
}
