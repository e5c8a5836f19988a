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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image spec. Layers are stored uncompressed, so the layer digest
// equals its diff_id and the output does not depend on a compressor's version.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	// annotationImageName is the full reference containerd names the image after on import.
	annotationImageName = "io.containerd.image.name"
	// annotationRefName is the OCI tag annotation (the tag only, per the image-layout spec).
	annotationRefName = "org.opencontainers.image.ref.name"

	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Errors returned for bad input, so callers and tests can tell them apart.
var (
	ErrBadTag     = errors.New("bad image tag")
	ErrBadFile    = errors.New("bad --file mapping")
	ErrBadSpec    = errors.New("bad image spec")
	ErrDuplicate  = errors.New("duplicate path in image")
	ErrNotRegular = errors.New("source is not a regular file")
)

// File is one file of the image: the path inside the image and where to read it from.
type File struct {
	// Dest is the absolute path inside the image, e.g. /manager.
	Dest string
	// Src is the path on the build machine.
	Src string
	// Mode overrides the permission bits; zero keeps the source's (0755 if any x bit, else 0644).
	Mode os.FileMode
	// Content, when non-nil, is used instead of reading Src (generated files).
	Content []byte
}

// Spec describes the image to build.
type Spec struct {
	// Tag is the full reference, e.g. localhost/ssmtunnel:v0.1.0 (a tag other than latest is required).
	Tag string
	// Files are the image's files; parent directories are created as needed.
	Files []File
	// User is the numeric user (and optional :group) the image runs as, e.g. 65532.
	User string
	// Entrypoint and Cmd become the config's Entrypoint and Cmd.
	Entrypoint []string
	Cmd        []string
	// Env entries KEY=VALUE; PATH is added when missing.
	Env []string
	// Labels are the config's labels.
	Labels map[string]string
	// WorkingDir defaults to /.
	WorkingDir string
	// Arch and OS of the image (defaults amd64/linux).
	Arch, OS string
	// Created is the fixed timestamp of every entry and of the config, so that the same
	// inputs give the same digests. Zero means the Unix epoch.
	Created time.Time
}

// Result tells what was written.
type Result struct {
	// ManifestDigest identifies the image (what `ctr images ls` shows as DIGEST).
	ManifestDigest string
	// ConfigDigest is the image ID.
	ConfigDigest string
	// LayerDigest is the sha256 of the uncompressed layer tar, equal to its diff_id.
	LayerDigest string
	// LayerSize is the size of the layer in bytes.
	LayerSize int64
}

// Image config, per the OCI image spec (only the fields we set).
type imageConfig struct {
	Created      string        `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Config       runtimeConfig `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []history     `json:"history"`
}

type runtimeConfig struct {
	User       string            `json:"User,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// dockerManifest is one entry of manifest.json, the `docker save` format, written beside the
// OCI layout so docker-archive readers can load the same tarball.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
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
	if s.WorkingDir == "" {
		s.WorkingDir = "/"
	}
	if s.Arch == "" {
		s.Arch = "amd64"
	}
	if s.OS == "" {
		s.OS = "linux"
	}
	if s.Created.IsZero() {
		s.Created = time.Unix(0, 0)
	}
	s.Created = s.Created.UTC()
	return nil
}

// Build writes the image as a tarball to out: an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) that `ctr images import` reads, plus a docker-archive manifest.json
// pointing at the same blobs. tmpDir holds the layer while it is hashed ("" = os.TempDir).
// Entries are sorted and carry Spec.Created as mtime, so equal inputs give equal bytes.
func Build(spec Spec, out io.Writer, tmpDir string) (Result, error) {
	if err := spec.Validate(); err != nil {
		return Result{}, err
	}
	tag, _ := ParseTag(spec.Tag)

	layerFile, err := os.CreateTemp(tmpDir, "imagebuild-layer-*.tar")
	if err != nil {
		return Result{}, fmt.Errorf("create temp layer: %w", err)
	}
	defer func() {
		_ = layerFile.Close()
		_ = os.Remove(layerFile.Name())
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(layerFile, h)}
	if err := writeLayer(cw, spec); err != nil {
		return Result{}, err
	}
	layerDigest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	res := Result{LayerDigest: layerDigest, LayerSize: cw.n}

	created := spec.Created.Format(time.RFC3339)
	env := append([]string(nil), spec.Env...)
	if !hasKey(env, "PATH") {
		env = append([]string{"PATH=" + defaultPath}, env...)
	}
	cfg := imageConfig{
		Created:      created,
		Architecture: spec.Arch,
		OS:           spec.OS,
		Config: runtimeConfig{
			User: spec.User, Env: env, Entrypoint: spec.Entrypoint, Cmd: spec.Cmd,
			WorkingDir: spec.WorkingDir, Labels: spec.Labels,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{layerDigest}},
		History: []history{{Created: created, CreatedBy: "hack/imagebuild"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return Result{}, err
	}
	cfgDesc := descriptor{MediaType: mediaTypeConfig, Digest: digest(cfgJSON), Size: int64(len(cfgJSON))}
	res.ConfigDigest = cfgDesc.Digest

	man := manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        cfgDesc,
		Layers:        []descriptor{{MediaType: mediaTypeLayer, Digest: layerDigest, Size: cw.n}},
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return Result{}, err
	}
	res.ManifestDigest = digest(manJSON)

	idx := index{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: mediaTypeManifest, Digest: res.ManifestDigest, Size: int64(len(manJSON)),
			Annotations: map[string]string{annotationImageName: spec.Tag, annotationRefName: tag},
			Platform:    &platform{Architecture: spec.Arch, OS: spec.OS},
		}},
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return Result{}, err
	}
	docker, err := json.Marshal([]dockerManifest{{
		Config:   blobPath(cfgDesc.Digest),
		RepoTags: []string{spec.Tag},
		Layers:   []string{blobPath(layerDigest)},
	}})
	if err != nil {
		return Result{}, err
	}

	if _, err := layerFile.Seek(0, io.SeekStart); err != nil {
		return Result{}, err
	}
	tw := tar.NewWriter(out)
	mtime := spec.Created
	// Sorted by name; blob names are digests. The directory entries help extractors.
	entries := []struct {
		name string
		data []byte
		file io.Reader
		size int64
	}{
		{name: "blobs/"},
		{name: "blobs/sha256/"},
		{name: blobPath(cfgDesc.Digest), data: cfgJSON},
		{name: blobPath(layerDigest), file: layerFile, size: cw.n},
		{name: blobPath(res.ManifestDigest), data: manJSON},
		{name: "index.json", data: idxJSON},
		{name: "manifest.json", data: docker},
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg}
		if strings.HasSuffix(e.name, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		} else if e.file != nil {
			hdr.Size = e.size
		} else {
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return Result{}, err
		}
		switch {
		case e.file != nil:
			if n, err := io.Copy(tw, e.file); err != nil || n != e.size {
				return Result{}, fmt.Errorf("copy layer (%d of %d bytes): %v", n, e.size, err)
			}
		case e.data != nil:
			if _, err := tw.Write(e.data); err != nil {
				return Result{}, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// writeLayer writes the root filesystem tar: every parent directory (0755, root-owned),
// then the files, all sorted by path, without a leading "/" or "./".
func writeLayer(w io.Writer, spec Spec) error {
	dirs := map[string]bool{"tmp": true}
	files := map[string]File{}
	for _, f := range spec.Files {
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
		hdr := &tar.Header{Name: name, ModTime: spec.Created, Uname: "", Gname: ""}
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

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
