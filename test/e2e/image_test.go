//go:build e2e

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

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The image `make image` built (bin/image), read as a registry client would: the e2e runs the amd64 image;
// here the index must hold both platforms, each image's binaries must be built for its platform, and a
// second build of the same commit must have the same digest.

// imageIndex is the one image index in the OCI layout dir.
func imageIndex(t *testing.T, dir string) v1.ImageIndex {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read %s: %v (make image writes it)", dir, err)
	}
	m, err := root.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("%s: %d entries, %v; want one image index", dir, len(m.Manifests), err)
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// elfMachines returns the ELF machine of each of the image's binaries.
func elfMachines(t *testing.T, img v1.Image, files ...string) map[string]elf.Machine {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range files {
		want[strings.TrimPrefix(f, "/")] = true
	}
	got := map[string]elf.Machine{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if !want[hdr.Name] {
				continue
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s is not an ELF binary: %v", hdr.Name, err)
			}
			got["/"+hdr.Name] = f.Machine
		}
		_ = rc.Close()
	}
	return got
}

func TestImageIndexPlatforms(t *testing.T) {
	root := repoRoot(t)
	idx := imageIndex(t, filepath.Join(root, "bin", "image"))
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	seen := map[string]bool{}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s/%s: %s (config says %s/%s, user %s)", d.Platform.OS, d.Platform.Architecture, d.Digest, cf.OS, cf.Architecture, cf.Config.User)
		if d.Platform == nil || cf.OS != d.Platform.OS || cf.Architecture != d.Platform.Architecture {
			t.Errorf("index entry %s: platform %+v, config %s/%s", d.Digest, d.Platform, cf.OS, cf.Architecture)
			continue
		}
		seen[cf.OS+"/"+cf.Architecture] = true
		if cf.Config.User != "65532" {
			t.Errorf("%s runs as %q, want 65532", cf.Architecture, cf.Config.User)
		}
		for _, k := range []string{"org.opencontainers.image.source", "org.opencontainers.image.revision", "org.opencontainers.image.version"} {
			if cf.Config.Labels[k] == "" {
				t.Errorf("%s image has no label %s", cf.Architecture, k)
			}
		}
		files := []string{"/manager", "/ssmtunnel", "/ssm-emulator"}
		got := elfMachines(t, img, files...)
		for _, f := range files {
			if got[f] != machines[cf.Architecture] {
				t.Errorf("%s image: %s is for %v, want %v", cf.Architecture, f, got[f], machines[cf.Architecture])
			}
		}
	}
	if !seen["linux/amd64"] || !seen["linux/arm64"] || len(seen) != 2 {
		t.Errorf("the index holds %v, want linux/amd64 and linux/arm64", seen)
	}
}

// TestImageBuildReproducible builds the image again from the same tree and compares digests.
func TestImageBuildReproducible(t *testing.T) {
	root := repoRoot(t)
	img, ldflags := os.Getenv("IMG"), os.Getenv("LDFLAGS")
	if img == "" || ldflags == "" {
		t.Fatal("IMG and LDFLAGS not set: run through make test-e2e, which builds the image with them")
	}
	first := imageIndex(t, filepath.Join(root, "bin", "image"))
	again := filepath.Join(t.TempDir(), "image")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-image.sh"), img, ldflags)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "IMAGE_LAYOUT="+again)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("second build: %v\n%s", err, out)
	}
	a, _ := first.Digest()
	b, _ := imageIndex(t, again).Digest()
	t.Logf("first build %s, second build %s", a, b)
	if a != b {
		t.Errorf("two builds of the same tree: index %s, then %s", a, b)
	}
}

// TestImageUpToDate: after make test-e2e built and pushed the image, make knows the image is current, so
// a second make demo or make test-e2e reuses it instead of building it again.
func TestImageUpToDate(t *testing.T) {
	img, platforms := os.Getenv("IMG"), os.Getenv("PLATFORMS")
	if img == "" || platforms == "" {
		t.Fatal("IMG and PLATFORMS not set: run through make test-e2e")
	}
	cmd := exec.Command("make", "-q", "image", "IMG="+img, "PLATFORMS="+platforms)
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("make -q image: %v (the image would be built again)\n%s", err, out)
	}
}
