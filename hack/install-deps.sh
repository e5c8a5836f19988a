#!/usr/bin/env bash
# install-deps.sh: installs the Debian 12 packages the local cluster (hack/cluster-up.sh)
# needs. Idempotent: when everything is installed it does nothing; `apt-get update` runs
# only when a package is missing. Needs root (CI runs it as root on a fresh Debian 12).
#
#   containerd                   container runtime (1.6 in Debian 12; we run a private instance)
#   runc                         OCI runtime used by containerd's runc v2 shim
#   containernetworking-plugins  CNI bridge, host-local, portmap, loopback (in /usr/lib/cni)
#   iptables                     kube-proxy (iptables mode), kubelet chains, pod egress REJECT rule
#   nftables                     /usr/sbin/nft, for kube-proxy's nftables mode and to inspect rules
#   conntrack                    flush pod/service conntrack entries at teardown; kube-proxy uses it
#   openssl                      PKI generation
#   iproute2                     ip addr/netns/link
#   util-linux                   flock, mount/umount, nsenter
#   procps                       sysctl, pgrep
#   ca-certificates              /etc/ssl/certs/ca-certificates.crt copied into the images
#   golang-go is NOT installed here: the project's Go toolchain comes from go.mod's version.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables nftables conntrack openssl iproute2 util-linux procps ca-certificates)

if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: must run as root (apt-get install)" >&2
	exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: all installed (${PACKAGES[*]})"
	exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps docker-ish extras out; policy-rc.d stops the postinst from
# starting a system containerd where an init system exists (we run our own instance).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
