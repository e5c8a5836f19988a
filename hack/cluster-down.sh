#!/usr/bin/env bash
# cluster-down.sh: stops the local cluster of hack/cluster-up.sh and restores the host to what
# _work/cluster/host recorded before bring-up: processes (by recorded PID), pod sandboxes,
# mounts, netns, the cni0 bridge, iptables chains and rules, nft tables, conntrack entries,
# kubepods cgroups, sysctls, the node IP on lo, and the paths outside the work dir that the
# components created (/var/lib/kubelet, /var/log/containers, /run/containerd, ...).
# Idempotent: without a cluster it does nothing.
#
# FAST=1 skips the graceful pod deletion (kill tasks, remove netns directly).
set -euo pipefail
# shellcheck source=hack/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"
mkdir -p "$(dirname "$W")"
exec 8>"$(dirname "$W")/cluster.lock"
flock 8

if [[ ! -d $HOST_STATE ]]; then
	if [[ -d $W ]] && ! grep -q " $W" /proc/self/mounts; then
		rm -rf --one-file-system "$W"
	fi
	log "no cluster to stop"
	exit 0
fi
START=$SECONDS

# 1. Graceful: stop the controllers first so nothing is recreated, then let the kubelet tear
#    down every pod (StopPodSandbox -> CNI DEL releases veths, IPs and portmap rules).
stop kube-controller-manager 5
stop kube-scheduler 5
if [[ ${FAST:-0} != 1 ]] && pid_of kubelet >/dev/null && apiserver_ready 2>/dev/null; then
	kubectl delete pods --all --all-namespaces --grace-period=1 --wait=false >/dev/null 2>&1 || true
	no_sandboxes() { [[ -z $(ctr_k8s tasks ls -q 2>/dev/null) ]]; }
	wait_for "pod sandboxes to stop" 30 no_sandboxes || log "some pods still running; killing them"
fi

# 2. Node components, then kill whatever tasks are left while containerd still runs.
stop kube-proxy 5
stop kubelet 10
if pid_of containerd >/dev/null; then
	for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
		ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
	done
	for ((i = 0; i < 50; i++)); do
		[[ -z $(ctr_k8s tasks ls 2>/dev/null | awk 'NR>1 && $3!="STOPPED"') ]] && break
		sleep 0.1
	done
	for t in $(ctr_k8s tasks ls -q 2>/dev/null); do
		ctr_k8s tasks delete -f "$t" >/dev/null 2>&1 || true
	done
fi
stop containerd 10
# runc shims outlive containerd; ours are the ones that talk to our socket.
for p in /proc/[0-9]*; do
	cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
	if [[ $cmd == *containerd-shim-runc-v2* && $cmd == *"$SOCK"* ]]; then
		kill -KILL "${p#/proc/}" 2>/dev/null || true
	fi
done
# Container processes left in cgroups that bring-up created.
kubepods_cgroups() {
	local cg
	for cg in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods*; do
		[[ -d $cg ]] || continue
		grep -qxF "$cg" "$HOST_STATE/cgroups-existing" || echo "$cg"
	done
}
for cg in $(kubepods_cgroups); do
	find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
done | sort -u | while read -r pid; do
	kill -KILL "$pid" 2>/dev/null || true
done

# 3. Control plane.
stop kube-apiserver 10
stop etcd 10
stop registry 5

# 4. Mounts under the work dir, the kubelet's and containerd's host paths, and the netns we
#    made, deepest first. Then netns files and cgroups.
netns_new() {
	local n
	for n in $(ls /run/netns 2>/dev/null); do
		grep -qxF "$n" "$HOST_STATE/netns-existing" 2>/dev/null || echo "/run/netns/$n"
	done
}
mounted_under() {
	# /proc/self/mounts escapes blanks as \040; our paths have none.
	awk -v a="$1" '$2 == a || index($2, a "/") == 1 {print $2}' /proc/self/mounts | sort -r
}
unmount_all() {
	local m
	for m in "$@"; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done
}
for n in $(netns_new); do
	unmount_all $(mounted_under "$n")
	rm -f "$n"
done
unmount_all $(mounted_under "$W")
while read -r p; do
	[[ -n $p ]] && unmount_all $(mounted_under "$p")
done <"$HOST_STATE/paths-created"
for cg in $(kubepods_cgroups); do
	find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || log "cannot remove cgroup $cg"
done

# 5. Network: bridge, node IP, iptables chains created since bring-up (and the rules in
#    builtin chains that jump to them), nft tables that did not exist, conntrack entries.
ip link del cni0 2>/dev/null || true
if [[ -f $HOST_STATE/lo-addr-added ]]; then
	ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
fi
iptables -w -D FORWARD -i cni0 ! -o cni0 -m comment --comment "ssmtunnel local cluster: no pod egress" -j "$EGRESS_CHAIN" 2>/dev/null || true
for fam in 4 6; do
	ipt=iptables
	[[ $fam == 6 ]] && ipt=ip6tables
	for t in filter nat mangle raw; do
		before=$HOST_STATE/chains-$fam-$t
		[[ -f $before ]] || continue
		mapfile -t new < <("$ipt" -w -t "$t" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -vxF -f "$before" || true)
		[[ ${#new[@]} -gt 0 ]] || continue
		# Rules in pre-existing chains that jump to a new chain: delete them.
		rules=$("$ipt" -w -t "$t" -S 2>/dev/null || true)
		while read -r rule; do
			[[ $rule == "-A "* ]] || continue
			chain=$(awk '{print $2}' <<<"$rule")
			target=$(sed -n 's/.* -[jg] \([^ ]*\).*/\1/p' <<<"$rule")
			if printf '%s\n' "${new[@]}" | grep -qxF "$target" && ! printf '%s\n' "${new[@]}" | grep -qxF "$chain"; then
				eval "$ipt -w -t $t -D ${rule#-A }" || log "cannot delete $ipt -t $t rule: $rule"
			fi
		done <<<"$rules"
		for c in "${new[@]}"; do "$ipt" -w -t "$t" -F "$c" 2>/dev/null || true; done
		for c in "${new[@]}"; do "$ipt" -w -t "$t" -X "$c" 2>/dev/null || log "cannot delete chain $c ($ipt -t $t)"; done
	done
done
# Empty nft tables that only exist because iptables-nft touched them.
nft list tables 2>/dev/null | while read -r _ fam name; do
	grep -qxF "table $fam $name" "$HOST_STATE/nft-tables" 2>/dev/null && continue
	case $fam in ip) ipt=iptables ;; ip6) ipt=ip6tables ;; *) continue ;; esac
	if ! "$ipt" -w -t "$name" -S 2>/dev/null | grep -qv '^-P '; then
		nft delete table "$fam" "$name" 2>/dev/null || true
	fi
done
for f in "-s $POD_CIDR" "-d $POD_CIDR" "-d $SERVICE_CIDR"; do
	# shellcheck disable=SC2086
	conntrack -D $f >/dev/null 2>&1 || true
done

# 6. Sysctls back to what they were.
while IFS='=' read -r k v; do
	[[ -n $k ]] || continue
	cur=$(sysctl -n "$k" 2>/dev/null) || continue
	[[ $cur == "$v" ]] || sysctl -qw "$k=$v" >/dev/null || log "cannot restore $k=$v"
done <"$HOST_STATE/sysctl"

# 7. Paths outside the work dir that did not exist before, then the work dir.
while read -r p; do
	[[ -n $p && -e $p ]] || continue
	if [[ -n $(mounted_under "$p") ]]; then
		log "not removing $p: still has mounts"
	else
		rm -rf --one-file-system "$p"
	fi
done <"$HOST_STATE/paths-created"
if [[ -n $(mounted_under "$W") ]]; then
	die "mounts remain under $W; not removing it: $(mounted_under "$W" | tr '\n' ' ')"
fi
rm -rf --one-file-system "$W"
log "down in $((SECONDS - START))s"
