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
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type entry struct {
	hdr  tar.Header
	data []byte
}

// readTar returns the entries of a tar stream in order.
func readTar(t *testing.T, r io.Reader) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		out = append(out, entry{hdr: *hdr, data: data})
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// fixture writes a fake binary (0755) and a data file (0600) and returns a spec using them.
func fixture(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "manager")
	if err := os.WriteFile(bin, []byte("\x7fELF fake manager binary"), 0o750); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Tag:        "localhost/ssmtunnel:v0.1.0",
		User:       "65532",
		Entrypoint: []string{"/manager"},
		Cmd:        []string{"--help"},
		Env:        []string{"A=b"},
		Labels:     map[string]string{"org.opencontainers.image.source": "ssmtunnel"},
		Files: append([]File{
			{Dest: "/manager", Src: bin},
			{Dest: "/etc/ssl/certs/ca-certificates.crt", Src: ca},
		}, PasswdFiles("65532")...),
	}
}

func build(t *testing.T, spec Spec) ([]byte, Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Build(spec, &buf, t.TempDir())
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return buf.Bytes(), res
}

func TestBuildStructure(t *testing.T) {
	spec := fixture(t)
	out, res := build(t, spec)
	entries := readTar(t, bytes.NewReader(out))

	byName := map[string]entry{}
	var names []string
	for _, e := range entries {
		names = append(names, e.hdr.Name)
		byName[e.hdr.Name] = e
		if !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: mtime %v, want the epoch", e.hdr.Name, e.hdr.ModTime)
		}
		if strings.HasPrefix(e.hdr.Name, "/") || strings.HasPrefix(e.hdr.Name, "./") {
			t.Errorf("%s: member names must be relative without ./", e.hdr.Name)
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	blob := func(d string) []byte {
		t.Helper()
		e, ok := byName["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing; entries %v", d, names)
		}
		if got := sha(e.data); got != d {
			t.Fatalf("blob %s has content digest %s", d, got)
		}
		return e.data
	}

	if got := string(byName["oci-layout"].data); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", got)
	}
	var idx index
	if err := json.Unmarshal(byName["index.json"].data, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	md := idx.Manifests[0]
	wantAnn := map[string]string{annotationImageName: "localhost/ssmtunnel:v0.1.0", annotationRefName: "v0.1.0"}
	if diff := cmp.Diff(wantAnn, md.Annotations); diff != "" {
		t.Errorf("index annotations (-want +got):\n%s", diff)
	}
	if md.Digest != res.ManifestDigest || md.MediaType != mediaTypeManifest {
		t.Errorf("index manifest descriptor %+v, result %+v", md, res)
	}
	manBytes := blob(md.Digest)
	if int64(len(manBytes)) != md.Size {
		t.Errorf("manifest size %d, descriptor says %d", len(manBytes), md.Size)
	}
	var man manifest
	if err := json.Unmarshal(manBytes, &man); err != nil {
		t.Fatal(err)
	}
	if len(man.Layers) != 1 || man.Layers[0].MediaType != mediaTypeLayer {
		t.Fatalf("manifest layers %+v", man.Layers)
	}
	layer := blob(man.Layers[0].Digest)
	if int64(len(layer)) != man.Layers[0].Size || man.Layers[0].Size != res.LayerSize {
		t.Errorf("layer size %d, manifest %d, result %d", len(layer), man.Layers[0].Size, res.LayerSize)
	}
	// The layer is uncompressed: its digest is the sha256 of the layer tar, equal to the diff_id.
	if man.Layers[0].Digest != sha(layer) || res.LayerDigest != sha(layer) {
		t.Errorf("layer digest %s, sha256 of layer tar %s", man.Layers[0].Digest, sha(layer))
	}
	cfgBytes := blob(man.Config.Digest)
	if man.Config.MediaType != mediaTypeConfig || int64(len(cfgBytes)) != man.Config.Size || res.ConfigDigest != man.Config.Digest {
		t.Errorf("config descriptor %+v (len %d), result %+v", man.Config, len(cfgBytes), res)
	}
	var cfg imageConfig
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		t.Fatal(err)
	}
	wantCfg := imageConfig{
		Created: "1970-01-01T00:00:00Z", Architecture: "amd64", OS: "linux",
		Config: runtimeConfig{
			User: "65532", Env: []string{"PATH=" + defaultPath, "A=b"},
			Entrypoint: []string{"/manager"}, Cmd: []string{"--help"}, WorkingDir: "/",
			Labels: map[string]string{"org.opencontainers.image.source": "ssmtunnel"},
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{sha(layer)}},
		History: []history{{Created: "1970-01-01T00:00:00Z", CreatedBy: "hack/imagebuild"}},
	}
	if diff := cmp.Diff(wantCfg, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	// manifest.json (docker-archive) points at the same blobs.
	var dm []dockerManifest
	if err := json.Unmarshal(byName["manifest.json"].data, &dm); err != nil {
		t.Fatal(err)
	}
	wantDM := []dockerManifest{{
		Config:   "blobs/sha256/" + strings.TrimPrefix(man.Config.Digest, "sha256:"),
		RepoTags: []string{"localhost/ssmtunnel:v0.1.0"},
		Layers:   []string{"blobs/sha256/" + strings.TrimPrefix(sha(layer), "sha256:")},
	}}
	if diff := cmp.Diff(wantDM, dm); diff != "" {
		t.Errorf("manifest.json (-want +got):\n%s", diff)
	}

	// The root filesystem.
	type fileInfo struct {
		Type byte
		Mode int64
		UID  int
		GID  int
		Data string
	}
	got := map[string]fileInfo{}
	var layerNames []string
	for _, e := range readTar(t, bytes.NewReader(layer)) {
		layerNames = append(layerNames, e.hdr.Name)
		got[e.hdr.Name] = fileInfo{e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, string(e.data)}
		if !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("layer %s: mtime %v", e.hdr.Name, e.hdr.ModTime)
		}
	}
	want := map[string]fileInfo{
		"etc/":                              {tar.TypeDir, 0o755, 0, 0, ""},
		"etc/group":                         {tar.TypeReg, 0o644, 0, 0, "root:x:0:\nnonroot:x:65532:\n"},
		"etc/passwd":                        {tar.TypeReg, 0o644, 0, 0, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		"etc/ssl/":                          {tar.TypeDir, 0o755, 0, 0, ""},
		"etc/ssl/certs/":                    {tar.TypeDir, 0o755, 0, 0, ""},
		"etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644, 0, 0, "-----BEGIN CERTIFICATE-----\n"},
		"manager":                           {tar.TypeReg, 0o755, 0, 0, "\x7fELF fake manager binary"},
		"tmp/":                              {tar.TypeDir, 0o1777, 0, 0, ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer contents (-want +got):\n%s", diff)
	}
	// Parents come before their children.
	seen := map[string]bool{}
	for _, n := range layerNames {
		if p := path.Dir(strings.TrimSuffix(n, "/")); p != "." && !seen[p+"/"] {
			t.Errorf("%s appears before its parent %s/", n, p)
		}
		seen[n] = true
	}
}

func TestBuildDeterministic(t *testing.T) {
	spec := fixture(t)
	a, ra := build(t, spec)
	// Touching the sources must not change the output: mtimes are fixed.
	for _, f := range spec.Files {
		if f.Src != "" {
			if err := os.Chtimes(f.Src, time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, rb := build(t, spec)
	if !bytes.Equal(a, b) || ra != rb {
		t.Fatalf("two builds of the same inputs differ: %+v vs %+v", ra, rb)
	}

	// Changing one byte of content changes the layer and manifest digests.
	if err := os.WriteFile(spec.Files[0].Src, []byte("\x7fELF fake manager binarY"), 0o750); err != nil {
		t.Fatal(err)
	}
	_, rc := build(t, spec)
	if rc.LayerDigest == ra.LayerDigest || rc.ManifestDigest == ra.ManifestDigest {
		t.Errorf("content change did not change digests: %+v vs %+v", ra, rc)
	}

	// Changing the tag changes only the index, not the manifest.
	spec.Tag = "localhost/ssmtunnel:v0.2.0"
	_, rd := build(t, spec)
	if rd.ManifestDigest != rc.ManifestDigest {
		t.Errorf("tag changed the manifest digest: %s vs %s", rd.ManifestDigest, rc.ManifestDigest)
	}
}

func TestBuildCreatedTime(t *testing.T) {
	spec := fixture(t)
	spec.Created = time.Unix(1700000000, 0)
	out, _ := build(t, spec)
	for _, e := range readTar(t, bytes.NewReader(out)) {
		if !e.hdr.ModTime.Equal(spec.Created) {
			t.Errorf("%s: mtime %v, want %v", e.hdr.Name, e.hdr.ModTime, spec.Created)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	base := fixture(t)
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   error
	}{
		{"no tag", func(s *Spec) { s.Tag = "localhost/ssmtunnel" }, ErrBadTag},
		{"latest", func(s *Spec) { s.Tag = "localhost/ssmtunnel:latest" }, ErrBadTag},
		{"no files", func(s *Spec) { s.Files = nil }, ErrBadSpec},
		{"relative dest", func(s *Spec) { s.Files[0].Dest = "manager" }, ErrBadFile},
		{"unclean dest", func(s *Spec) { s.Files[0].Dest = "/a/../manager" }, ErrBadFile},
		{"duplicate", func(s *Spec) { s.Files = append(s.Files, s.Files[0]) }, ErrDuplicate},
		{"file is parent", func(s *Spec) { s.Files = append(s.Files, File{Dest: "/manager/x", Src: s.Files[0].Src}) }, ErrDuplicate},
		{"named user", func(s *Spec) { s.User = "nonroot" }, ErrBadSpec},
		{"bad env", func(s *Spec) { s.Env = []string{"=x"} }, ErrBadSpec},
		{"missing source", func(s *Spec) { s.Files[0].Src = filepath.Join(t.TempDir(), "nope") }, ErrBadFile},
		{"directory source", func(s *Spec) { s.Files[0].Src = t.TempDir() }, ErrNotRegular},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			spec.Files = append([]File(nil), base.Files...)
			tc.mutate(&spec)
			_, err := Build(spec, io.Discard, t.TempDir())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Build error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseTag(t *testing.T) {
	tests := []struct {
		ref, tag string
		ok       bool
	}{
		{"localhost/ssmtunnel:v0.1.0", "v0.1.0", true},
		{"localhost/pause:v1", "v1", true},
		{"localhost:5000/a/b-c_d:1.2", "1.2", true},
		{"ssmtunnel:dev", "dev", true},
		{"localhost/ssmtunnel", "", false},
		{"localhost/ssmtunnel:latest", "", false},
		{"Localhost/ssmtunnel:v1", "", false},
		{"localhost/ssmtunnel:", "", false},
		{"localhost/ssmtunnel@sha256:abc", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		tag, err := ParseTag(tc.ref)
		if (err == nil) != tc.ok || tag != tc.tag {
			t.Errorf("ParseTag(%q) = %q, %v; want %q ok=%v", tc.ref, tag, err, tc.tag, tc.ok)
		}
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		in   string
		want File
		ok   bool
	}{
		{"/manager=bin/linux/manager", File{Dest: "/manager", Src: "bin/linux/manager"}, true},
		{"/etc/x.conf=x.conf:0600", File{Dest: "/etc/x.conf", Src: "x.conf", Mode: 0o600}, true},
		{"/a=c:/weird:path", File{Dest: "/a", Src: "c:/weird:path"}, true},
		{"/a=", File{}, false},
		{"=src", File{}, false},
		{"manager=src", File{}, false},
		{"/=src", File{}, false},
		{"/a/./b=src", File{}, false},
		{"no-equals", File{}, false},
		{"/a=:0755", File{}, false}, // a mode with no source (found by FuzzParseFile)
	}
	for _, tc := range tests {
		got, err := ParseFile(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseFile(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrBadFile) {
			t.Errorf("ParseFile(%q) error %v is not ErrBadFile", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseFile(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestRunWritesTarball(t *testing.T) {
	spec := fixture(t)
	out := filepath.Join(t.TempDir(), "sub", "image.tar")
	err := run([]string{"--tag", spec.Tag, "--out", out, "--user", "65532",
		"--file", "/manager=" + spec.Files[0].Src, "--entrypoint", "/manager", "--entrypoint", "run"})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var names []string
	for _, e := range readTar(t, f) {
		names = append(names, e.hdr.Name)
	}
	if len(names) != 8 {
		t.Errorf("tarball entries %v, want 8 (2 dirs, 3 blobs, index.json, manifest.json, oci-layout)", names)
	}
	if err := run([]string{"--out", out}); err == nil {
		t.Error("run without --tag succeeded")
	}
}

// FuzzParseFile checks that ParseFile never panics and only accepts clean absolute destinations.
func FuzzParseFile(f *testing.F) {
	for _, s := range []string{"/manager=bin/manager", "/a=b:0644", "=", "/=/", "/a/../b=c", "/x=y:9999", "/0=:000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		file, err := ParseFile(s)
		if err != nil {
			return
		}
		if checkDest(file.Dest) != nil || file.Src == "" || file.Mode > 0o7777 {
			t.Fatalf("ParseFile(%q) accepted %+v", s, file)
		}
	})
}

// FuzzParseTag checks that accepted references carry a non-latest tag.
func FuzzParseTag(f *testing.F) {
	for _, s := range []string{"localhost/ssmtunnel:v0.1.0", "a:latest", "a", "A:b", "h:5000/x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag, err := ParseTag(s)
		if err != nil {
			return
		}
		if tag == "" || tag == "latest" || !strings.HasSuffix(s, ":"+tag) {
			t.Fatalf("ParseTag(%q) = %q", s, tag)
		}
	})
}
