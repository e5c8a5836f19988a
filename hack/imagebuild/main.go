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

// Command imagebuild builds container images from static binaries and files with go-containerregistry,
// without a Docker daemon, and pushes them to a registry. The same inputs give the same digests.
//
// Build a multi-platform image index into an OCI image layout ({os} and {arch} in a source path become
// each platform's):
//
//	go run ./hack/imagebuild --tag localhost/ssmtunnel:v0.1.0 --layout bin/image --user 65532 \
//	  --platform linux/amd64 --platform linux/arm64 \
//	  --file /manager=bin/{os}-{arch}/manager \
//	  --file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt \
//	  --entrypoint /manager
//
// or one platform's image as a tarball for `ctr images import` (--tar FILE instead of --layout). Push a
// layout's index to any registry, printing the reference with its digest:
//
//	go run ./hack/imagebuild push --layout bin/image --to 127.0.0.1:5000/ssmtunnel:v0.1.0 --plain-http
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	args := os.Args[1:]
	var err error
	if len(args) > 0 && args[0] == "push" {
		err = push(context.Background(), args[1:])
	} else {
		err = build(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func build(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	var files, entrypoint, cmd, env, labels, platforms listFlag
	tag := fs.String("tag", "", "image reference with a version tag, e.g. localhost/ssmtunnel:v0.1.0 (required)")
	layoutDir := fs.String("layout", "", "write the image index as an OCI image layout in this directory")
	tarFile := fs.String("tar", "", "write the (one platform's) image as a tarball for ctr images import")
	user := fs.String("user", "", "numeric uid[:gid] the image runs as, e.g. 65532")
	workdir := fs.String("workdir", "/", "working directory")
	noPasswd := fs.Bool("no-passwd", false, "do not generate /etc/passwd and /etc/group")
	epoch := fs.String("mtime", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time of every entry (default SOURCE_DATE_EPOCH or 0)")
	fs.Var(&platforms, "platform", "os/arch of an image in the index (repeatable; default linux/amd64)")
	fs.Var(&files, "file", "DEST=SRC[:MODE] file to put into the image; {os} and {arch} in SRC become the platform's (repeatable)")
	fs.Var(&entrypoint, "entrypoint", "entrypoint element (repeat for arguments)")
	fs.Var(&cmd, "cmd", "cmd element (repeatable)")
	fs.Var(&env, "env", "KEY=VALUE environment variable (repeatable)")
	fs.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *tag == "" || (*layoutDir == "") == (*tarFile == "") {
		return errors.New("--tag and one of --layout or --tar are required")
	}
	spec := Spec{Tag: *tag, User: *user, WorkingDir: *workdir, Entrypoint: entrypoint, Cmd: cmd, Env: env}
	for _, p := range platforms {
		pl, err := ParsePlatform(p)
		if err != nil {
			return err
		}
		spec.Platforms = append(spec.Platforms, pl)
	}
	if *epoch != "" {
		sec, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("--mtime %q: want Unix seconds", *epoch)
		}
		spec.Created = time.Unix(sec, 0)
	}
	dests := map[string]bool{}
	for _, f := range files {
		file, err := ParseFile(f)
		if err != nil {
			return err
		}
		dests[file.Dest] = true
		spec.Files = append(spec.Files, file)
	}
	if !*noPasswd {
		for _, f := range PasswdFiles(*user) {
			if !dests[f.Dest] {
				spec.Files = append(spec.Files, f)
			}
		}
	}
	if len(labels) > 0 {
		spec.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return fmt.Errorf("--label %q: want KEY=VALUE", l)
			}
			spec.Labels[k] = v
		}
	}
	idx, err := Index(spec)
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if *tarFile != "" {
		if err := writeAtomically(*tarFile, func(tmp string) error { return WriteTarball(tmp, idx, *tag) }); err != nil {
			return err
		}
		fmt.Printf("%s %s\n", *tarFile, *tag)
		return nil
	}
	if err := writeAtomically(*layoutDir, func(tmp string) error { return WriteLayout(tmp, idx, *tag) }); err != nil {
		return err
	}
	fmt.Printf("%s %s index %s (%s)\n", *layoutDir, *tag, digest, strings.Join(platforms, ", "))
	return nil
}

// writeAtomically has write fill a temporary path beside dst, then renames it into place, so a reader
// never sees half an image.
func writeAtomically(dst string, write func(tmp string) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	_ = os.RemoveAll(tmp)
	defer func() { _ = os.RemoveAll(tmp) }()
	if err := write(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("imagebuild push", flag.ContinueOnError)
	layoutDir := fs.String("layout", "", "OCI image layout written by imagebuild --layout (required)")
	to := fs.String("to", "", "reference to push to, e.g. 127.0.0.1:5000/ssmtunnel:v0.1.0 (required)")
	plainHTTP := fs.Bool("plain-http", false, "talk to the registry over plain HTTP (a local registry)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *layoutDir == "" || *to == "" || fs.NArg() > 0 {
		return errors.New("push needs --layout DIR and --to REFERENCE")
	}
	d, err := Push(ctx, *layoutDir, *to, *plainHTTP)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *to, d)
	return nil
}

// Push pushes the image index of an imagebuild layout to the registry reference to, with the Docker
// credential helpers' and config's credentials, and returns its digest.
func Push(ctx context.Context, layoutDir, to string, plainHTTP bool) (v1.Hash, error) {
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(to, opts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%w %q: %v", ErrBadTag, to, err)
	}
	root, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read the image layout %s: %w (build it with make image)", layoutDir, err)
	}
	m, err := root.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(m.Manifests) != 1 {
		return v1.Hash{}, fmt.Errorf("%s holds %d entries, want the one image index imagebuild writes", layoutDir, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	remoteOpts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if desc, err := remote.Head(ref, remoteOpts...); err == nil && desc.Digest == digest {
		return digest, nil // the registry has this very index under the tag: nothing to send
	}
	if err := remote.WriteIndex(ref, idx, remoteOpts...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return digest, nil
}
