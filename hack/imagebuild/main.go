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

// Command imagebuild writes a container image tarball from static binaries and files,
// without a Docker daemon or a registry: one uncompressed layer, an OCI image layout plus a
// docker-archive manifest.json, importable with `ctr -n k8s.io images import` (containerd
// 1.6 and later). Output is deterministic: the same inputs give the same digests.
//
//	go run ./hack/imagebuild --tag localhost/ssmtunnel:v0.1.0 --out bin/image.tar --user 65532 \
//	  --file /manager=bin/linux/manager \
//	  --file /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt \
//	  --entrypoint /manager
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	var files, entrypoint, cmd, env, labels listFlag
	tag := fs.String("tag", "", "image reference with a version tag, e.g. localhost/ssmtunnel:v0.1.0 (required)")
	out := fs.String("out", "", "output tarball path (required)")
	user := fs.String("user", "", "numeric uid[:gid] the image runs as, e.g. 65532")
	workdir := fs.String("workdir", "/", "working directory")
	arch := fs.String("arch", runtime.GOARCH, "image architecture")
	noPasswd := fs.Bool("no-passwd", false, "do not generate /etc/passwd and /etc/group")
	epoch := fs.String("mtime", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time of every entry (default SOURCE_DATE_EPOCH or 0)")
	fs.Var(&files, "file", "DEST=SRC[:MODE] file to put into the image (repeatable)")
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
	if *tag == "" || *out == "" {
		return fmt.Errorf("--tag and --out are required")
	}
	spec := Spec{Tag: *tag, User: *user, WorkingDir: *workdir, Arch: *arch,
		Entrypoint: entrypoint, Cmd: cmd, Env: env}
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

	// Write next to the destination and rename, so a reader never sees half a tarball.
	dir := filepath.Dir(*out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".imagebuild-*.tar")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	res, err := Build(spec, tmp, dir)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Printf("%s %s manifest %s layer %s (%d bytes)\n", *out, *tag, res.ManifestDigest, res.LayerDigest, res.LayerSize)
	return nil
}
