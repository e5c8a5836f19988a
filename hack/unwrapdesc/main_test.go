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
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestUnwrap(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"one line", "Replicas of the tunnel.", "Replicas of the tunnel."},
		{"paragraph", "Ports to forward,\nat least one.", "Ports to forward, at least one."},
		{"paragraphs", "First\nparagraph.\n\nSecond\nparagraph.", "First paragraph.\n\nSecond paragraph."},
		{"trailing space", "a \nb", "a b"},
		{
			"list with continuation lines",
			"Options are:\n- Honor: only nodes\nmatching.\n- Ignore: all\n  nodes.\n* star\n1. one\n2) two\n\nAfter.",
			"Options are:\n- Honor: only nodes matching.\n- Ignore: all nodes.\n* star\n1. one\n2) two\n\nAfter.",
		},
		{"code after prose", "Example:\n    kubectl get pf\n    kubectl explain pf\nThen.", "Example:\n    kubectl get pf\n    kubectl explain pf\nThen."},
		{"table", "spread as:\n| zone1 | zone2 |\n|  P P  |   P   |\nIn this case\nthe minimum.", "spread as:\n| zone1 | zone2 |\n|  P P  |   P   |\nIn this case the minimum."},
		{"not a list", "a value -\nnot a list, 3.5\nis a number", "a value - not a list, 3.5 is a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Unwrap(tc.in)
			if got != tc.want {
				t.Errorf("Unwrap(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if again := Unwrap(got); again != got {
				t.Errorf("Unwrap is not stable: %q became %q", got, again)
			}
			if bad := HardBreaks(got); len(bad) > 0 {
				t.Errorf("HardBreaks(%q) = %q after Unwrap", got, bad)
			}
			if tc.in != tc.want && len(HardBreaks(tc.in)) == 0 {
				t.Errorf("HardBreaks(%q) found nothing, but Unwrap changes it", tc.in)
			}
		})
	}
}

func TestRewriteKeepsEverythingElse(t *testing.T) {
	in := []byte(`---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  versions:
  - schema:
      openAPIV3Schema:
        description: |-
          PortForward exposes ports
          as a Service.
        properties:
          description:
            description: A property named description.
            maximum: 65535
            type: integer
          port:
            description: 'port: a number'
            format: int32
            type: integer
`)
	want := []byte(`---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  versions:
  - schema:
      openAPIV3Schema:
        description: PortForward exposes ports as a Service.
        properties:
          description:
            description: A property named description.
            maximum: 65535
            type: integer
          port:
            description: 'port: a number'
            format: int32
            type: integer
`)
	got, err := rewrite(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("rewrite:\n%s\nwant:\n%s", got, want)
	}
	if _, err := rewrite(append(in, "---\nkind: Other\n"...)); err == nil {
		t.Error("rewrite accepted two documents")
	}
}

// TestGeneratedCRDs checks the committed CRDs, as `make manifests` leaves them: no description keeps a hard
// line break inside a paragraph, and unwrapdesc would change nothing.
func TestGeneratedCRDs(t *testing.T) {
	var files []string
	for _, dir := range []string{"config/crd/bases", "charts/ssmtunnel/crds"} {
		m, err := filepath.Glob(filepath.Join("..", "..", dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no CRDs found under config/crd/bases or charts/ssmtunnel/crds")
	}
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var obj any
		if err := yaml.Unmarshal(in, &obj); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		n := 0
		walkDescriptions(obj, func(s string) string {
			n++
			for _, line := range HardBreaks(s) {
				t.Errorf("%s: description %.60q...: hard line break before %q: run 'make manifests'", f, s, line)
			}
			return s
		})
		if n == 0 {
			t.Errorf("%s: no descriptions found", f)
		}
		out, err := rewrite(in)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !bytes.Equal(in, out) {
			t.Errorf("%s: unwrapdesc would rewrite it: run 'make manifests'", f)
		}
	}
}
