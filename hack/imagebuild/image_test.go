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
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type entry struct {
	hdr  tar.Header
	data string
}

// layerEntries returns the entries of an image's only layer, in order.
func layerEntries(t *testing.T, img v1.Image) []entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []entry
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read the layer: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		out = append(out, entry{hdr: *hdr, data: string(data)})
	}
}

var platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// fixture writes a fake binary per platform (0750, its content naming the platform) and a data file
// (0600), and returns a two-platform spec using them.
func fixture(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	for _, p := range platforms {
		d := filepath.Join(dir, p.OS+"-"+p.Architecture)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "manager"), []byte("\x7fELF manager for "+p.Architecture), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Tag:        "localhost/ssmtunnel:v0.1.0",
		Platforms:  platforms,
		User:       "65532",
		Entrypoint: []string{"/manager"},
		Cmd:        []string{"--help"},
		Env:        []string{"A=b"},
		Labels:     map[string]string{"org.opencontainers.image.revision": "abc123"},
		Created:    time.Unix(1700000000, 0),
		Files: append([]File{
			{Dest: "/manager", Src: filepath.Join(dir, "{os}-{arch}", "manager")},
			{Dest: "/etc/ssl/certs/ca-certificates.crt", Src: ca},
		}, PasswdFiles("65532")...),
	}
}

// writeAndRead builds spec into a layout and reads back the layout's one entry: the image index.
func writeAndRead(t *testing.T, spec Spec) (v1.ImageIndex, v1.Descriptor) {
	t.Helper()
	idx, err := Index(spec)
	if err != nil {
		t.Fatalf("Index: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "image")
	if err := WriteLayout(dir, idx, spec.Tag); err != nil {
		t.Fatalf("WriteLayout: %v", err)
	}
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := root.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("layout index.json: %+v, %v; want one entry", m, err)
	}
	got, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return got, m.Manifests[0]
}

// TestIndexStructure reads a built layout back: an OCI index tagged in the layout, one image per
// platform holding that platform's binary, the same shared files, the config of the spec, and entries
// that carry the fixed time and root ownership.
func TestIndexStructure(t *testing.T) {
	spec := fixture(t)
	idx, desc := writeAndRead(t, spec)
	if desc.MediaType != types.OCIImageIndex {
		t.Errorf("layout entry media type %s, want %s", desc.MediaType, types.OCIImageIndex)
	}
	if desc.Annotations[annotationRefName] != "v0.1.0" || desc.Annotations[annotationImageName] != spec.Tag {
		t.Errorf("layout entry annotations %v, want the tag v0.1.0 and the name %s", desc.Annotations, spec.Tag)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(platforms) {
		t.Fatalf("index holds %d images, want %d", len(im.Manifests), len(platforms))
	}
	for i, m := range im.Manifests {
		p := platforms[i]
		if m.Platform == nil || m.Platform.OS != p.OS || m.Platform.Architecture != p.Architecture {
			t.Errorf("index entry %d platform %+v, want %s", i, m.Platform, p)
		}
		if m.MediaType != types.OCIManifestSchema1 {
			t.Errorf("index entry %d media type %s", i, m.MediaType)
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		want := v1.Config{
			User: "65532", Env: []string{"PATH=" + defaultPath, "A=b"}, Entrypoint: []string{"/manager"},
			Cmd: []string{"--help"}, WorkingDir: "/", Labels: spec.Labels,
		}
		if diff := cmp.Diff(want, cf.Config); diff != "" {
			t.Errorf("%s config (-want +got):\n%s", p, diff)
		}
		if cf.OS != p.OS || cf.Architecture != p.Architecture || !cf.Created.Time.Equal(spec.Created) {
			t.Errorf("%s config os/arch/created %s/%s/%s", p, cf.OS, cf.Architecture, cf.Created.Time)
		}
		mt, _ := img.MediaType()
		manifest, _ := img.Manifest()
		if mt != types.OCIManifestSchema1 || manifest.Config.MediaType != types.OCIConfigJSON || manifest.Layers[0].MediaType != types.OCILayer {
			t.Errorf("%s media types: manifest %s, config %s, layer %s; want OCI", p, mt, manifest.Config.MediaType, manifest.Layers[0].MediaType)
		}
		var names []string
		for _, e := range layerEntries(t, img) {
			names = append(names, e.hdr.Name)
			if !e.hdr.ModTime.Equal(spec.Created) || e.hdr.Uid != 0 || e.hdr.Gid != 0 {
				t.Errorf("%s %s: mtime %s uid %d gid %d, want %s and root", p, e.hdr.Name, e.hdr.ModTime, e.hdr.Uid, e.hdr.Gid, spec.Created)
			}
			switch e.hdr.Name {
			case "manager":
				if e.data != "\x7fELF manager for "+p.Architecture || e.hdr.Mode != 0o755 {
					t.Errorf("%s /manager: %q mode %o, want this platform's binary, 0755", p, e.data, e.hdr.Mode)
				}
			case "etc/ssl/certs/ca-certificates.crt":
				if e.hdr.Mode != 0o644 {
					t.Errorf("%s CA bundle mode %o, want 0644", p, e.hdr.Mode)
				}
			case "etc/passwd":
				if !strings.Contains(e.data, "nonroot:x:65532:65532:") {
					t.Errorf("%s /etc/passwd %q has no user 65532", p, e.data)
				}
			case "tmp/":
				if e.hdr.Mode != 0o1777 {
					t.Errorf("%s /tmp mode %o, want 01777", p, e.hdr.Mode)
				}
			}
		}
		wantNames := []string{"etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "manager", "tmp/"}
		if diff := cmp.Diff(wantNames, names); diff != "" {
			t.Errorf("%s layer entries (-want +got):\n%s", p, diff)
		}
	}
}

// TestIndexReproducible: two builds of the same inputs have the same digest, and the time is part of it.
func TestIndexReproducible(t *testing.T) {
	spec := fixture(t)
	a, _ := writeAndRead(t, spec)
	b, _ := writeAndRead(t, spec)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("two builds of the same inputs: %s and %s", da, db)
	}
	spec.Created = spec.Created.Add(time.Second)
	c, _ := writeAndRead(t, spec)
	if dc, _ := c.Digest(); dc == da {
		t.Errorf("a different time gave the same digest %s", dc)
	}
}

// TestPush pushes a layout into a registry (go-containerregistry's, in process) and reads it back by tag.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	spec := fixture(t)
	idx, err := Index(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "image")
	if err := WriteLayout(dir, idx, spec.Tag); err != nil {
		t.Fatal(err)
	}
	to := strings.TrimPrefix(srv.URL, "http://") + "/ssmtunnel:v0.1.0"
	got, err := Push(context.Background(), dir, to, true)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	want, _ := idx.Digest()
	if got != want {
		t.Errorf("Push returned %s, want the index digest %s", got, want)
	}
	ref, _ := name.NewTag(to, name.Insecure)
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != want || desc.MediaType != types.OCIImageIndex {
		t.Errorf("the registry serves %s (%s) at %s, want the index %s", desc.Digest, desc.MediaType, to, want)
	}
	if _, err := Push(context.Background(), filepath.Join(t.TempDir(), "missing"), to, true); err == nil || !strings.Contains(err.Error(), "make image") {
		t.Errorf("push of a missing layout: %v, want an error that says to build it", err)
	}
}

// TestWriteTarball writes a one-platform image as a tarball that reads back with its tag, and refuses an
// index of two.
func TestWriteTarball(t *testing.T) {
	spec := fixture(t)
	spec.Platforms = platforms[:1]
	idx, err := Index(spec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "image.tar")
	if err := WriteTarball(file, idx, spec.Tag); err != nil {
		t.Fatalf("WriteTarball: %v", err)
	}
	tag, _ := name.NewTag(spec.Tag)
	img, err := tarball.ImageFromPath(file, &tag)
	if err != nil {
		t.Fatalf("read the tarball back: %v", err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Config.User != "65532" || cf.Architecture != "amd64" {
		t.Errorf("tarball config %+v, %v", cf, err)
	}
	two, err := Index(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(file, two, spec.Tag); !errors.Is(err, ErrBadPlatform) {
		t.Errorf("a tarball of two platforms: %v, want ErrBadPlatform", err)
	}
}

func TestIndexErrors(t *testing.T) {
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
		{"platform twice", func(s *Spec) { s.Platforms = append(s.Platforms, s.Platforms[0]) }, ErrBadPlatform},
		{"missing source", func(s *Spec) { s.Files[0].Src = filepath.Join(t.TempDir(), "nope") }, ErrBadFile},
		{"a platform's source missing", func(s *Spec) {
			s.Platforms = append(s.Platforms, v1.Platform{OS: "linux", Architecture: "riscv64"})
		}, ErrBadFile},
		{"directory source", func(s *Spec) { s.Files[0].Src = t.TempDir() }, ErrNotRegular},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			spec.Files = append([]File(nil), base.Files...)
			spec.Platforms = append([]v1.Platform(nil), base.Platforms...)
			tc.mutate(&spec)
			if _, err := Index(spec); !errors.Is(err, tc.want) {
				t.Fatalf("Index error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParsePlatform(t *testing.T) {
	for in, ok := range map[string]bool{"linux/amd64": true, "linux/arm64": true, "linux": false, "/amd64": false, "linux/": false, "linux/arm/v7": false} {
		if _, err := ParsePlatform(in); (err == nil) != ok {
			t.Errorf("ParsePlatform(%q) = %v, want ok=%t", in, err, ok)
		}
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
