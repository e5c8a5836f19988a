/*
Copyright 2026 The ssmtunnel Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRepositoryCitations: every § citation in the repository names a section of docs/ssm-protocol.md.
func TestRepositoryCitations(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from the test's directory: %v", err)
	}
	missing, duplicates, total, err := Check(root)
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 {
		t.Fatal("no § citations found: the walk is broken")
	}
	if len(missing) > 0 {
		lines := make([]string, len(missing))
		for i, c := range missing {
			lines[i] = c.String()
		}
		t.Errorf("%d of %d citations name no section heading in %s:\n%s", len(missing), total, DocPath,
			strings.Join(lines, "\n"))
	}
	if len(duplicates) > 0 {
		t.Errorf("%s has more than one heading for sections %v", DocPath, duplicates)
	}
}

func TestCitations(t *testing.T) {
	for line, want := range map[string][]string{
		"// see \u00a79.4 and \u00a710.3 step 4.":                      {"9.4", "10.3"},
		"(ssm-protocol.md \u00a78–\u00a79), \u00a75 \"Parsing rules\"": {"8", "9", "5"},
		"RFC 6298 \u00a75.5 backoff, our \u00a77.3":                    {"7.3"},
		"(RFC 6761 \u00a76.3)":                                         nil,
		"RFC \u00a75.5 has no number":                                  {"5.5"},
		"no citation here, 9.4":                                        nil,
	} {
		if got := Citations(line); !slices.Equal(got, want) {
			t.Errorf("Citations(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestSections(t *testing.T) {
	doc := "# Title\n\n## 1. One\n\n### 1.1 Sub\n\n```\n## 7. not a heading\n```\n\n#### 1.1.2 Deeper\n## 10. Ten\n## 10. Again\n## Appendix\n"
	got, dups := Sections([]byte(doc))
	for _, s := range []string{"1", "1.1", "1.1.2", "10"} {
		if !got[s] {
			t.Errorf("section %s not found in %v", s, got)
		}
	}
	if got["7"] {
		t.Error("a heading inside a code block counted")
	}
	if !slices.Equal(dups, []string{"10"}) {
		t.Errorf("duplicates %v, want [10]", dups)
	}
}

// TestCollectSkips: the document itself, bin/, _work/ and .git/ are not searched, and other file kinds are
// ignored.
func TestCollectSkips(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(DocPath, "## 1. One\n\u00a799\n")
	write("a/x.go", "package a\n\n// \u00a71 and \u00a72\n")
	write("a/y.yaml", "# \u00a73\n")
	write("a/z.md", "\u00a71\n")
	write("a/w.txt", "\u00a74\n")
	write("bin/t.go", "// \u00a75\n")
	write("_work/t.md", "\u00a76\n")
	write(".git/t.md", "\u00a77\n")
	cites, err := Collect(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cites {
		got = append(got, c.String())
	}
	slices.Sort(got)
	want := []string{"a/x.go:3: \u00a71", "a/x.go:3: \u00a72", "a/y.yaml:1: \u00a73", "a/z.md:1: \u00a71"}
	if !slices.Equal(got, want) {
		t.Errorf("citations %q, want %q", got, want)
	}
	missing, _, _, err := Check(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) != 2 || missing[0].Section == "1" || missing[1].Section == "1" {
		t.Errorf("missing %v, want \u00a72 and \u00a73", missing)
	}
}
