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

// Command unwrapdesc rewrites the descriptions of generated CRDs so that a paragraph is one line.
// controller-gen keeps the hard line breaks of the Go doc comments, and `kubectl explain` prints them as they
// are, breaking sentences mid-line at its own width. Single newlines inside a paragraph become spaces; blank
// lines (paragraph breaks), list items ("- ", "* ", "1. "), table rows ("| ... |") and indented code lines stay
// on their own lines. `make manifests` runs it on config/crd/bases after controller-gen:
//
//	go run ./hack/unwrapdesc config/crd/bases/*.yaml
//
// The files are parsed and written back with sigs.k8s.io/yaml, the encoder controller-gen uses, so nothing but
// the descriptions changes, and a second run changes nothing.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: unwrapdesc CRD.yaml...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		if err := rewriteFile(path); err != nil {
			fmt.Fprintf(os.Stderr, "unwrapdesc: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

// rewriteFile unwraps the descriptions of the CRD in path, writing the file only when it changes.
func rewriteFile(path string) error {
	in, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := rewrite(in)
	if err != nil {
		return err
	}
	if bytes.Equal(in, out) {
		return nil
	}
	return os.WriteFile(path, out, 0o644)
}

const docStart = "---\n"

// rewrite returns the single YAML document in, with every description unwrapped. A leading "---" line, which
// controller-gen writes, is kept.
func rewrite(in []byte) ([]byte, error) {
	body, hasStart := bytes.CutPrefix(in, []byte(docStart))
	if bytes.Contains(body, []byte("\n---\n")) || bytes.HasPrefix(body, []byte(docStart)) {
		return nil, fmt.Errorf("more than one YAML document: expected one CRD per file, as controller-gen writes")
	}
	var obj any
	// json.Number keeps integers such as maximum: 65535 exactly as written.
	if err := yaml.Unmarshal(body, &obj, func(d *json.Decoder) *json.Decoder { d.UseNumber(); return d }); err != nil {
		return nil, err
	}
	walkDescriptions(obj, Unwrap)
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, err
	}
	if hasStart {
		out = append([]byte(docStart), out...)
	}
	return out, nil
}

// walkDescriptions replaces every string value of a "description" key in obj with f of it. A property named
// "description" has an object as its value and is walked into instead.
func walkDescriptions(obj any, f func(string) string) {
	switch v := obj.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "description" {
				v[k] = f(s)
				continue
			}
			walkDescriptions(e, f)
		}
	case []any:
		for _, e := range v {
			walkDescriptions(e, f)
		}
	}
}

var (
	listItem = regexp.MustCompile(`^\s*([-*+]|[0-9]+[.)])\s`)
	tableRow = regexp.MustCompile(`^\s*\|`)
)

// lineKind classifies a description line for unwrapping.
type lineKind int

const (
	blank    lineKind = iota
	text              // prose: joins the line before it
	item              // starts a list item
	table             // a table row, kept as it is
	indented          // starts with white space: code, or the continuation of a list item
)

func kindOf(line string) lineKind {
	switch {
	case strings.TrimSpace(line) == "":
		return blank
	case listItem.MatchString(line):
		return item
	case tableRow.MatchString(line):
		return table
	case line[0] == ' ' || line[0] == '\t':
		return indented
	}
	return text
}

// Unwrap joins the lines of each paragraph of s with spaces. A list item's continuation lines, indented or
// not, join the item; an indented line after prose is code and stays; table rows and code never take the next
// line.
func Unwrap(s string) string {
	lines := strings.Split(s, "\n")
	out := make([]string, 0, len(lines))
	// open is whether the last output line takes continuation lines, and inItem whether it is a list item.
	open, inItem := false, false
	for _, line := range lines {
		k := kindOf(line)
		if open && (k == text || (k == indented && inItem)) {
			out[len(out)-1] = strings.TrimRight(out[len(out)-1], " \t") + " " + strings.TrimSpace(line)
			continue
		}
		open, inItem = k == text || k == item, k == item
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// HardBreaks returns the lines of s that continue the prose or the list item of the line before them: the
// lines Unwrap joins. It is empty for an unwrapped description.
func HardBreaks(s string) []string {
	var bad []string
	open, inItem := false, false
	for i, line := range strings.Split(s, "\n") {
		k := kindOf(line)
		if i > 0 && open && (k == text || (k == indented && inItem)) {
			bad = append(bad, line)
			continue
		}
		open, inItem = k == text || k == item, k == item
	}
	return bad
}
