#!/usr/bin/env bash
# build-kube.sh VERSION OUTDIR [component...]
#
# Builds the Kubernetes binaries the local cluster and envtest need, from source,
# through the Go module proxy (there are no prebuilt downloads on the CI machines):
#
#   kube-apiserver etcd kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns
#
# kube-apiserver and etcd come first because envtest (KUBEBUILDER_ASSETS=OUTDIR) needs only
# those two. Components named on the command line are built in that order instead.
#
# How: `go mod download` the module (k8s.io/kubernetes@VERSION, go.etcd.io/etcd/server/v3 at
# the etcd version that Kubernetes pins, github.com/coredns/coredns), copy its source to a
# scratch dir under _work/kube-build, point its local replace directives (./staging/...,
# ../api, ...) at the published modules (k8s.io/* v0.MINOR.PATCH, go.etcd.io/etcd/* at the
# same version), and `go build`. Kubernetes binaries are version-stamped with -X ldflags in
# k8s.io/component-base/version and k8s.io/client-go/pkg/version so `kubectl version` and
# anything that parses gitVersion work.
#
# Cached: a binary that exists and reports the right version is not rebuilt, so a second
# run takes seconds. Each binary is written to a temp name and renamed, so a reader never
# sees half a file. Concurrent runs serialise on a lock file.
#
# Env: ETCD_VERSION (default: the one Kubernetes pins in hack/lib/etcd.sh),
#      COREDNS_VERSION (default v1.15.0), KUBE_BUILD_WORK (default <repo>/_work/kube-build).
set -euo pipefail

usage() {
	echo "usage: $0 VERSION OUTDIR [component...]   e.g. $0 v1.37.2 bin/k8s/v1.37.2" >&2
	echo "components: ${ALL_COMPONENTS[*]}" >&2
	exit 2
}

ALL_COMPONENTS=(kube-apiserver etcd kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns)
[[ $# -ge 2 ]] || usage
KUBE_VERSION=$1
OUTDIR=$2
shift 2
if [[ ! $KUBE_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "build-kube: VERSION must look like v1.37.2, got '$KUBE_VERSION'" >&2
	exit 2
fi
KUBE_MINOR=${BASH_REMATCH[1]}
KUBE_PATCH=${BASH_REMATCH[2]}
STAGING_VERSION="v0.${KUBE_MINOR}.${KUBE_PATCH}" # k8s.io/api etc. are published as v0.MINOR.PATCH
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}

COMPONENTS=("$@")
[[ ${#COMPONENTS[@]} -gt 0 ]] || COMPONENTS=("${ALL_COMPONENTS[@]}")
for c in "${COMPONENTS[@]}"; do
	[[ " ${ALL_COMPONENTS[*]} " == *" $c "* ]] || {
		echo "build-kube: unknown component '$c'" >&2
		usage
	}
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}
WORK=${KUBE_BUILD_WORK:-$ROOT/_work/kube-build}
mkdir -p "$WORK" "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$WORK/build-$KUBE_VERSION.log

# One build at a time: several make targets (kube-bins, cluster-up, test-integration) may
# run this at once; the second waits and then finds everything cached.
exec 9>"$WORK/lock"
if ! flock -n 9; then
	echo "build-kube: another build is running, waiting for $WORK/lock"
	flock 9
fi

# Builds must not pick up the caller's workspace or vendor settings.
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local

# moddir MODULE@VERSION prints the module's directory in the module cache, downloading it.
moddir() {
	local json dir
	json=$(cd "$WORK" && GOFLAGS= $GO mod download -json "$1") || {
		echo "build-kube: go mod download $1 failed:" >&2
		echo "$json" >&2
		return 1
	}
	dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$json")
	[[ -d $dir ]] || {
		echo "build-kube: no source dir for $1: $json" >&2
		return 1
	}
	echo "$dir"
}

# prepare MODULE@VERSION DEST REPLACEMENT-VERSION-FN: copies the module source to DEST once
# and rewrites every replace directive that points at a local path to the published
# module given by the function (called with the module path, prints the version).
prepare() {
	local modver=$1 dest=$2 verfn=$3 src mod ver
	if [[ -f $dest/.prepared ]]; then
		return 0
	fi
	# Explicit "|| return 1": this runs inside "if build_one", where set -e does not apply.
	src=$(moddir "$modver") || return 1
	rm -rf "$dest" "$dest.tmp"
	mkdir -p "$(dirname "$dest")"
	cp -r "$src" "$dest.tmp" || return 1
	chmod -R u+w "$dest.tmp"
	rm -rf "$dest.tmp/vendor" "$dest.tmp/go.work" "$dest.tmp/go.work.sum"
	# Local-path replaces: "old => ./x" or "old => ../x", in a block or on one line.
	while read -r mod; do
		ver=$($verfn "$mod") || return 1
		(cd "$dest.tmp" && $GO mod edit -replace="$mod=$mod@$ver") || return 1
		echo "build-kube: $modver: replace $mod => $mod $ver" >>"$LOG"
	done < <(sed -nE 's,^[[:space:]]*(replace[[:space:]]+)?([^[:space:]]+)([[:space:]]+v[^[:space:]]+)?[[:space:]]+=>[[:space:]]+\.\.?/.*,\2,p' "$dest.tmp/go.mod")
	mv "$dest.tmp" "$dest" || return 1
	touch "$dest/.prepared"
}

staging_version() { echo "$STAGING_VERSION"; }
etcd_version() { echo "v$ETCD_VERSION"; }
no_local_replace() {
	echo "build-kube: unexpected local replace of $1" >&2
	return 1
}

KSRC=$WORK/src/kubernetes-$KUBE_VERSION
kube_src() {
	prepare "k8s.io/kubernetes@$KUBE_VERSION" "$KSRC" staging_version
}

# etcd_pinned prints the etcd version Kubernetes tests against (hack/lib/etcd.sh).
etcd_pinned() {
	local f
	f=$(moddir "k8s.io/kubernetes@$KUBE_VERSION")/hack/lib/etcd.sh
	sed -n 's/^ETCD_VERSION=\${ETCD_VERSION:-\([0-9.]*\)}.*/\1/p' "$f"
}

kube_ldflags() {
	local info date flags="-s -w" pkg
	info=$(cd "$WORK" && GOFLAGS= $GO mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",*$/\1/p')
	# The release time of the module, so the stamp is reproducible.
	date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
	date=${date:-1970-01-01T00:00:00Z}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$KUBE_MINOR"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=$date"
	done
	echo "$flags"
}

# want NAME prints the version string NAME --version must contain.
want() {
	case $1 in
	etcd) echo "etcd Version: $ETCD_VERSION" ;;
	coredns) echo "CoreDNS-${COREDNS_VERSION#v}" ;;
	kubectl) echo "Client Version: $KUBE_VERSION" ;;
	*) echo "Kubernetes $KUBE_VERSION" ;;
	esac
}

version_of() {
	local bin=$OUTDIR/$1
	case $1 in
	kubectl) "$bin" version --client 2>&1 ;;
	coredns) "$bin" -version 2>&1 ;;
	*) "$bin" --version 2>&1 ;;
	esac
}

is_current() {
	local out
	[[ -x $OUTDIR/$1 ]] || return 1
	if [[ $1 == coredns ]]; then # must be static (an earlier build was not)
		out=$($GO version -m "$OUTDIR/$1") || return 1
		[[ $out == *"CGO_ENABLED=0"* ]] || return 1
	fi
	# Capture first: "| grep -q" would SIGPIPE the binary and fail under pipefail.
	out=$(version_of "$1") || return 1
	[[ $out == *"$(want "$1")"* ]]
}

# gobuild NAME DIR PKG LDFLAGS: builds into a temp file and renames it into place.
gobuild() {
	local name=$1 dir=$2 pkg=$3 ldflags=$4 tmp=$OUTDIR/.$1.tmp
	rm -f "$tmp"
	{
		echo "=== $(date -u +%FT%TZ) go build $name ($pkg) in $dir"
		(cd "$dir" && $GO build -ldflags "$ldflags" -o "$tmp" "$pkg")
	} >>"$LOG" 2>&1 || {
		rm -f "$tmp"
		return 1
	}
	mv -f "$tmp" "$OUTDIR/$name"
}

# COREDNS_PLUGINS are the plugins compiled into CoreDNS: those the cluster's Corefile uses (hack/cluster-up.sh)
# and a few for debugging. The stock build links every plugin, cloud DNS SDKs included, and takes several
# times longer to compile.
COREDNS_PLUGINS=(errors log health ready kubernetes cache loadbalance reload loop)

# coredns_plugins DIR rewrites CoreDNS's generated plugin import list (core/plugin/zplugin.go, normally made
# from plugin.cfg by `go generate`) to COREDNS_PLUGINS. The directive order (zdirectives.go) stays whole.
coredns_plugins() {
	local f=$1/core/plugin/zplugin.go p
	{
		echo "// Written by hack/build-kube.sh: only the plugins the local cluster uses."
		echo
		echo "package plugin"
		echo
		echo "import ("
		for p in "${COREDNS_PLUGINS[@]}"; do
			echo "	_ \"github.com/coredns/coredns/plugin/$p\""
		done
		echo ")"
	} >"$f.tmp" && mv "$f.tmp" "$f"
}

build_one() {
	local name=$1 ldflags
	case $name in
	etcd)
		prepare "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" "$WORK/src/etcd-v$ETCD_VERSION" etcd_version || return 1
		gobuild etcd "$WORK/src/etcd-v$ETCD_VERSION" . "-s -w"
		;;
	coredns)
		prepare "github.com/coredns/coredns@$COREDNS_VERSION" "$WORK/src/coredns-$COREDNS_VERSION" no_local_replace || return 1
		coredns_plugins "$WORK/src/coredns-$COREDNS_VERSION" || return 1
		# Static: it runs in an image that has no libc (hack/imagebuild, like the pause image).
		CGO_ENABLED=0 gobuild coredns "$WORK/src/coredns-$COREDNS_VERSION" . "-s -w"
		;;
	*)
		kube_src || return 1
		ldflags=$(kube_ldflags) || return 1
		gobuild "$name" "$KSRC" "./cmd/$name" "$ldflags"
		;;
	esac
}

ETCD_VERSION=${ETCD_VERSION:-$(etcd_pinned)}
ETCD_VERSION=${ETCD_VERSION#v}
[[ -n $ETCD_VERSION ]] || {
	echo "build-kube: cannot find the etcd version pinned by kubernetes $KUBE_VERSION; set ETCD_VERSION" >&2
	exit 1
}

# The Kubernetes components that are missing are built by one `go build` of all their packages: the go
# command then overlaps one binary's link with the next one's compiles, which sequential builds cannot do
# (not timed against sequential builds). Each is then checked below (and reported as cached), and built
# alone if that failed.
kube_missing=()
missing=()
for c in "${COMPONENTS[@]}"; do
	is_current "$c" && continue
	missing+=("$c")
	[[ $c == etcd || $c == coredns ]] || kube_missing+=("$c")
done
echo "build-kube: Kubernetes $KUBE_VERSION into $OUTDIR: ${#missing[@]} of ${#COMPONENTS[@]} to build${missing[*]:+ (${missing[*]})}; log $LOG"

# heartbeat WHAT START: while a long go build runs, one line every 30 s with the time so far, how many
# packages it has compiled (go build -v names each in the log) and the last one, so no step is silent.
heartbeat() {
	local what=$1 start=$2 pkgs
	while sleep 30; do
		pkgs=$(grep -cvE '^(===|build-kube:|go: )' "$LOG" 2>/dev/null || true)
		echo "build-kube: ... $what: $(($(date +%s) - start))s, $pkgs packages compiled so far (last: $(tail -n 1 "$LOG" 2>/dev/null | cut -c1-70))"
	done
}
# with_heartbeat WHAT CMD...: runs CMD with a heartbeat.
with_heartbeat() {
	local what=$1 hb rc=0
	shift
	heartbeat "$what" "$(date +%s)" &
	hb=$!
	"$@" || rc=$?
	kill "$hb" 2>/dev/null || true
	wait "$hb" 2>/dev/null || true
	return $rc
}

if [[ ${#kube_missing[@]} -gt 1 ]]; then
	start=$(date +%s)
	tmpdir=$OUTDIR/.kube-build.tmp
	rm -rf "$tmpdir" && mkdir -p "$tmpdir"
	pkgs=()
	for c in "${kube_missing[@]}"; do pkgs+=("./cmd/$c"); done
	echo "build-kube: building ${kube_missing[*]} in one go build (the longest step: minutes on a cold cache)"
	if with_heartbeat "the Kubernetes $KUBE_VERSION source" kube_src && ldflags=$(kube_ldflags) && with_heartbeat "${kube_missing[*]}" eval '{
		echo "=== $(date -u +%FT%TZ) go build ${kube_missing[*]} in $KSRC"
		(cd "$KSRC" && $GO build -v -ldflags "$ldflags" -o "$tmpdir/" "${pkgs[@]}")
	} >>"$LOG" 2>&1'; then
		for c in "${kube_missing[@]}"; do mv -f "$tmpdir/$c" "$OUTDIR/$c"; done
		together=" ${kube_missing[*]} "
		echo "build-kube: ${kube_missing[*]} built together in $(($(date +%s) - start))s"
	else
		echo "build-kube: building ${kube_missing[*]} together failed; building them one by one (see $LOG)" >&2
	fi
	rm -rf "$tmpdir"
fi

failed=0
n=0
for c in "${COMPONENTS[@]}"; do
	n=$((n + 1))
	step="[$n/${#COMPONENTS[@]}]"
	if is_current "$c"; then
		if [[ ${together:-} == *" $c "* ]]; then
			echo "build-kube: $step $c built together with the others ($(want "$c")) $OUTDIR/$c"
		else
			echo "build-kube: $step $c cached ($(want "$c")) $OUTDIR/$c"
		fi
		continue
	fi
	echo "build-kube: $step building $c"
	start=$(date +%s)
	if with_heartbeat "$c" build_one "$c" && is_current "$c"; then
		echo "build-kube: $step $c built in $(($(date +%s) - start))s ($(want "$c")) $OUTDIR/$c"
	else
		echo "build-kube: $step $c FAILED after $(($(date +%s) - start))s; see $LOG" >&2
		tail -n 20 "$LOG" >&2 || true
		failed=1
	fi
done
exit $failed
