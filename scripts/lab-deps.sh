#!/usr/bin/env bash
# What the namespaced lab (cluster/lab, tests/cluster/lab) needs on Debian: ip/tc, nft,
# iptables, sshd + ssh client, and rsync (the cluster launcher syncs its bootstrap files
# with it). Needs root; does nothing if everything is there already.
set -euo pipefail
need=()
command -v ip >/dev/null && command -v tc >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v unshare >/dev/null && command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The lab starts its own sshd per machine; it needs no system service. Debian's package may
# start one where an init system runs: stop it only if this script just installed it.
if [[ " ${need[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null; then
  systemctl disable --now ssh.service >/dev/null 2>&1 || true
fi
