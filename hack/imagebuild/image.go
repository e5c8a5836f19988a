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
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// annotationRefName is the OCI layout's tag annotation (the tag only, per the image-layout spec).
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is the full reference, which containerd names an imported image after.
	annotationImageName = "io.containerd.image.name"

	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Errors returned for bad input, so callers and tests can tell them apart.
var (
	ErrBadTag      = errors.New("bad image tag")
	ErrBadFile     = errors.New("bad --file mapping")
	ErrBadSpec     = errors.New("bad image spec")
	ErrBadPlatform = errors.New("bad --platform")
	ErrDuplicate   = errors.New("duplicate path in image")
	ErrNotRegular  = errors.New("source is not a regular file")
)

// File is one file of the image: the path inside the image and where to read it from.
type File struct {
	// Dest is the absolute path inside the image, e.g. /manager.
	Dest string
	// Src is the path on the build machine; {os} and {arch} become the platform's, so one list of files
	// describes every platform's image (bin/{os}-{arch}/manager).
	Src string
	// Mode overrides the permission bits; zero keeps the source's (0755 if any x bit, else 0644).
	Mode os.FileMode
	// Content, when non-nil, is used instead of reading Src (generated files).
	Content []byte
}

// Spec describes the image to build: one image per platform, in an index.
type Spec struct {
	// Tag is the full reference, e.g. localhost/ssmtunnel:v0.1.0 (a tag other than latest is required).
	Tag string
	// Platforms are os/arch pairs such as linux/amd64; default linux/amd64.
	Platforms []v1.Platform
	// Files are the image's files; parent directories are created as needed.
	Files []File
	// User is the numeric user (and optional :group) the image runs as, e.g. 65532.
	User string
	// Entrypoint and Cmd become the config's Entrypoint and Cmd.
	Entrypoint []string
	Cmd        []string
	// Env entries KEY=VALUE; PATH is added when missing.
	Env []string
	// Labels are the config's labels (the OCI annotations source, revision, version belong here too).
	Labels map[string]string
	// WorkingDir defaults to /.
	WorkingDir string
	// Created is the fixed timestamp of every entry and of the config, so that the same inputs give the
	// same digests. Zero means the Unix epoch.
	Created time.Time
}

// ParsePlatform parses os/arch, e.g. linux/arm64.
func ParsePlatform(s string) (v1.Platform, error) {
	osName, arch, ok := strings.Cut(s, "/")
	if !ok || osName == "" || arch == "" || strings.Contains(arch, "/") {
		return v1.Platform{}, fmt.Errorf("%w %q: want os/arch, e.g. linux/amd64", ErrBadPlatform, s)
	}
	return v1.Platform{OS: osName, Architecture: arch}, nil
}

// refPattern is a conservative image reference: lowercase name components separated by
// '/', an optional registry host[:port] first, and a mandatory tag.
var refPattern = regexp.MustCompile(`^([a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*:([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$`)

// ParseTag checks an image reference and returns its tag. A tag is required and must not
// be latest: the kubelet defaults the pull policy of :latest (and untagged) images to
// Always, and nothing can be pulled in the local cluster.
func ParseTag(ref string) (string, error) {
	m := refPattern.FindStringSubmatch(ref)
	if m == nil {
		return "", fmt.Errorf("%w %q: want lowercase name[:port]/path:tag, e.g. localhost/ssmtunnel:v0.1.0", ErrBadTag, ref)
	}
	tag := m[len(m)-1]
	if tag == "latest" {
		return "", fmt.Errorf("%w %q: use a version tag, not latest (latest makes the kubelet always pull)", ErrBadTag, ref)
	}
	return tag, nil
}

// ParseFile parses a --file value DEST=SRC[:MODE], e.g. /manager=bin/linux/manager or
// /etc/app.conf=app.conf:0644.
func ParseFile(s string) (File, error) {
	dest, src, ok := strings.Cut(s, "=")
	if !ok || dest == "" || src == "" {
		return File{}, fmt.Errorf("%w %q: want /path/in/image=path/on/disk[:0755]", ErrBadFile, s)
	}
	f := File{Dest: dest, Src: src}
	if i := strings.LastIndexByte(src, ':'); i >= 0 {
		var mode uint32
		if _, err := fmt.Sscanf(src[i+1:], "%o", &mode); err == nil && len(src[i+1:]) >= 3 && mode <= 0o7777 {
			f.Src, f.Mode = src[:i], os.FileMode(mode)
		}
	}
	if f.Src == "" {
		// "/x=:0755" names a mode but no file to copy.
		return File{}, fmt.Errorf("%w %q: the source path before the mode is empty; want /path/in/image=path/on/disk[:0755]", ErrBadFile, s)
	}
	if err := checkDest(f.Dest); err != nil {
		return File{}, err
	}
	return f, nil
}

// checkDest requires a clean absolute path that is not the root.
func checkDest(dest string) error {
	if !strings.HasPrefix(dest, "/") || path.Clean(dest) != dest || dest == "/" {
		return fmt.Errorf("%w: destination %q must be a clean absolute path like /manager", ErrBadFile, dest)
	}
	return nil
}

// Validate fills defaults and checks the spec.
func (s *Spec) Validate() error {
	if _, err := ParseTag(s.Tag); err != nil {
		return err
	}
	if len(s.Files) == 0 {
		return fmt.Errorf("%w: no files; add --file /path/in/image=path/on/disk", ErrBadSpec)
	}
	seen := map[string]bool{}
	for _, f := range s.Files {
		if err := checkDest(f.Dest); err != nil {
			return err
		}
		if seen[f.Dest] {
			return fmt.Errorf("%w: %s given twice", ErrDuplicate, f.Dest)
		}
		seen[f.Dest] = true
	}
	for _, f := range s.Files {
		// A file may not be the parent directory of another.
		for d := path.Dir(f.Dest); d != "/"; d = path.Dir(d) {
			if seen[d] {
				return fmt.Errorf("%w: %s is a file but also the parent of %s", ErrDuplicate, d, f.Dest)
			}
		}
	}
	if s.User != "" && !regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`).MatchString(s.User) {
		return fmt.Errorf("%w: user %q must be numeric (uid or uid:gid) so the kubelet can verify runAsNonRoot", ErrBadSpec, s.User)
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("%w: env %q must be KEY=VALUE", ErrBadSpec, e)
		}
	}
	if len(s.Platforms) == 0 {
		s.Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}}
	}
	platforms := map[string]bool{}
	for _, p := range s.Platforms {
		if platforms[p.String()] {
			return fmt.Errorf("%w: %s given twice", ErrBadPlatform, p)
		}
		platforms[p.String()] = true
	}
	if s.WorkingDir == "" {
		s.WorkingDir = "/"
	}
	if s.Created.IsZero() {
		s.Created = time.Unix(0, 0)
	}
	s.Created = s.Created.UTC()
	return nil
}

// Index builds the image of every platform and the OCI image index over them. Layers are gzipped tars
// of sorted entries carrying Spec.Created as mtime, and the configs carry it as their date: equal inputs
// give equal digests.
func Index(spec Spec) (v1.ImageIndex, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range spec.Platforms {
		img, err := platformImage(spec, p)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Architecture}},
		})
	}
	return idx, nil
}

// platformImage is the image of one platform: the files, with {os} and {arch} in their sources expanded.
func platformImage(spec Spec, p v1.Platform) (v1.Image, error) {
	files := make([]File, len(spec.Files))
	for i, f := range spec.Files {
		f.Src = strings.NewReplacer("{os}", p.OS, "{arch}", p.Architecture).Replace(f.Src)
		if f.Content == nil {
			// Fail here with the file's name rather than deep inside a registry push.
			st, err := os.Stat(f.Src)
			if err != nil {
				return nil, fmt.Errorf("%w: %s for %s (%s): %v", ErrBadFile, f.Src, f.Dest, p, err)
			}
			if !st.Mode().IsRegular() {
				return nil, fmt.Errorf("%w: %s (for %s) is %s", ErrNotRegular, f.Src, f.Dest, st.Mode().Type())
			}
		}
		files[i] = f
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeLayer(pw, files, spec.Created)) }()
		return pr, nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	env := append([]string(nil), spec.Env...)
	if !hasKey(env, "PATH") {
		env = append([]string{"PATH=" + defaultPath}, env...)
	}
	created := v1.Time{Time: spec.Created}
	base, err := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1), &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Created:      created,
		Config: v1.Config{
			User: spec.User, Env: env, Entrypoint: spec.Entrypoint, Cmd: spec.Cmd,
			WorkingDir: spec.WorkingDir, Labels: spec.Labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(mutate.ConfigMediaType(base, types.OCIConfigJSON), mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "hack/imagebuild"},
	})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// WriteLayout writes idx as the OCI image layout dir (replacing what was there), tagged spec.Tag.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	if _, err := ParseTag(tag); err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrBadTag, tag, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	l, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return l.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		annotationRefName: ref.TagStr(), annotationImageName: tag,
	}))
}

// WriteTarball writes the index's only image as a tarball (docker-archive) that `ctr images import`
// reads: for images the local cluster needs before any registry, such as its pause image.
func WriteTarball(file string, idx v1.ImageIndex, tag string) error {
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(m.Manifests) != 1 {
		return fmt.Errorf("%w: a tarball holds one platform's image, not %d", ErrBadPlatform, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrBadTag, tag, err)
	}
	return tarball.WriteToFile(file, ref, img)
}

// writeLayer writes the root filesystem tar: every parent directory (0755, root-owned),
// then the files, all sorted by path, without a leading "/" or "./".
func writeLayer(w io.Writer, entries []File, created time.Time) error {
	dirs := map[string]bool{"tmp": true}
	files := map[string]File{}
	for _, f := range entries {
		name := strings.TrimPrefix(f.Dest, "/")
		files[name] = f
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)

	tw := tar.NewWriter(w)
	for _, name := range names {
		hdr := &tar.Header{Name: name, ModTime: created, Uname: "", Gname: ""}
		f, isFile := files[name]
		if !isFile {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
			if name == "tmp" {
				hdr.Mode = 0o1777
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		if err := writeFile(tw, hdr, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, hdr *tar.Header, f File) error {
	hdr.Typeflag = tar.TypeReg
	if f.Content != nil {
		hdr.Size = int64(len(f.Content))
		hdr.Mode = int64(orDefault(f.Mode, 0o644))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Content)
		return err
	}
	src, err := os.Open(f.Src)
	if err != nil {
		return fmt.Errorf("%w: %s for %s: %v", ErrBadFile, f.Src, f.Dest, err)
	}
	defer func() { _ = src.Close() }()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s (for %s) is %s", ErrNotRegular, f.Src, f.Dest, st.Mode().Type())
	}
	mode := os.FileMode(0o644)
	if st.Mode().Perm()&0o111 != 0 {
		mode = 0o755
	}
	hdr.Mode = int64(orDefault(f.Mode, mode))
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, src); err != nil || n != st.Size() {
		return fmt.Errorf("copy %s: %d of %d bytes: %v (did it change while building?)", f.Src, n, st.Size(), err)
	}
	return nil
}

// PasswdFiles returns minimal /etc/passwd and /etc/group entries for root and the image's
// user, so tools that look the user up by id find a name and a home directory.
func PasswdFiles(user string) []File {
	uid, gid, _ := strings.Cut(user, ":")
	if gid == "" {
		gid = uid
	}
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n"
	group := "root:x:0:\n"
	if uid != "" && uid != "0" {
		passwd += fmt.Sprintf("nonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n", uid, gid)
	}
	if gid != "" && gid != "0" {
		group += fmt.Sprintf("nonroot:x:%s:\n", gid)
	}
	return []File{
		{Dest: "/etc/passwd", Content: []byte(passwd), Mode: 0o644},
		{Dest: "/etc/group", Content: []byte(group), Mode: 0o644},
	}
}

func orDefault(m, d os.FileMode) os.FileMode {
	if m == 0 {
		return d
	}
	return m
}

func hasKey(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}
