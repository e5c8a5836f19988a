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

// Command doccheck fails when the repository cites a section of docs/ssm-protocol.md that the document does
// not have. Comments, tests and Markdown refer to the protocol description as "§9.4" or "§10.3"; every such
// citation in a *.go, *.md or *.yaml file must name a numbered heading of the document ("## 9. ...",
// "### 9.4 ..."). A § directly preceded by "RFC <number> " cites that RFC, not the document, and is skipped.
// The package's test runs the check on the repository, so `make test` catches a citation that lost its
// section; by hand:
//
//	go run ./hack/doccheck [repository root]
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// DocPath is the protocol description, relative to the repository root.
const DocPath = "docs/ssm-protocol.md"

// skipDirs are top-level directories that hold no sources of ours: tool builds and scratch space.
var skipDirs = map[string]bool{"bin": true, "_work": true}

// citedExts are the kinds of file whose citations are checked.
var citedExts = map[string]bool{".go": true, ".md": true, ".yaml": true}

var (
	citationRE = regexp.MustCompile(`§(\d+(?:\.\d+)*)`)
	rfcRE      = regexp.MustCompile(`RFC \d+ $`)
	headingRE  = regexp.MustCompile(`^#{1,6}[ \t]+(\d+(?:\.\d+)*)\.?(?:[ \t]|$)`)
)

// Citation is one § reference: the file (slash-separated, relative to the root), its 1-based line and the
// section number cited.
type Citation struct {
	File    string
	Line    int
	Section string
}

func (c Citation) String() string { return fmt.Sprintf("%s:%d: §%s", c.File, c.Line, c.Section) }

// Citations returns the section numbers cited on one line, in order, without those that cite an RFC.
func Citations(line string) []string {
	var out []string
	for _, m := range citationRE.FindAllStringSubmatchIndex(line, -1) {
		if rfcRE.MatchString(line[:m[0]]) {
			continue
		}
		out = append(out, line[m[2]:m[3]])
	}
	return out
}

// Sections returns the section numbers of the document's numbered headings and, separately, every number
// that is the heading of more than one section (so a citation of it would be ambiguous).
func Sections(doc []byte) (sections map[string]bool, duplicates []string) {
	sections = map[string]bool{}
	inFence := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			if sections[m[1]] {
				duplicates = append(duplicates, m[1])
			}
			sections[m[1]] = true
		}
	}
	return sections, duplicates
}

// Collect walks the repository at root and returns every citation in its *.go, *.md and *.yaml files, except
// those in the document itself and under .git, bin and _work.
func Collect(root string) ([]Citation, error) {
	var cites []Citation
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == ".git" || skipDirs[rel] {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == DocPath || !d.Type().IsRegular() || !citedExts[filepath.Ext(path)] {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte("§")) {
			return nil
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, s := range Citations(line) {
				cites = append(cites, Citation{File: rel, Line: i + 1, Section: s})
			}
		}
		return nil
	})
	return cites, err
}

// Check returns the citations under root whose section is not a heading of the document, and the document's
// duplicated section numbers.
func Check(root string) (missing []Citation, duplicates []string, total int, err error) {
	doc, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(DocPath)))
	if err != nil {
		return nil, nil, 0, err
	}
	sections, duplicates := Sections(doc)
	cites, err := Collect(root)
	if err != nil {
		return nil, nil, 0, err
	}
	for _, c := range cites {
		if !sections[c.Section] {
			missing = append(missing, c)
		}
	}
	return missing, duplicates, len(cites), nil
}

func main() {
	root := "."
	if len(os.Args) > 1 {
		root = os.Args[1]
	}
	missing, duplicates, total, err := Check(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "doccheck:", err)
		os.Exit(2)
	}
	for _, c := range missing {
		fmt.Printf("%s has no section in %s\n", c, DocPath)
	}
	for _, s := range slices.Compact(slices.Sorted(slices.Values(duplicates))) {
		fmt.Printf("%s: more than one heading is section %s\n", DocPath, s)
	}
	if len(missing) > 0 || len(duplicates) > 0 {
		os.Exit(1)
	}
	fmt.Printf("doccheck: %d citations, all have a section in %s\n", total, DocPath)
}
