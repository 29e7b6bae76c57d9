#!/usr/bin/env bash
# Installs and starts libvirt + QEMU (TCG, no KVM needed) for HCP's libvirt provider, and
# creates what examples/config/libvirt.yaml and the tests expect: the dir storage pool `hcp` at
# /var/lib/hcp/pool holding the tiny base image volume `base-tiny.qcow2`.
#
# Idempotent; run as root. Debian 12 packages only (see shared/PEERS.md).
set -euo pipefail

URI=qemu:///system
POOL=hcp
POOL_DIR=/var/lib/hcp/pool
BASE=base-tiny.qcow2
PACKAGES=(libvirt-dev libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu
          qemu-system-x86 qemu-utils genisoimage)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A newer qemu-utils (backports) conflicts with Debian 12's qemu-system-x86, and apt removes it
# to make room: bring back the matching one.
if ! command -v qemu-img >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
fi

getent group kvm >/dev/null || groupadd -r kvm
getent passwd libvirt-qemu >/dev/null || {
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    useradd -r -g libvirt-qemu libvirt-qemu
}
mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/qemu "$POOL_DIR"

# QEMU runs as root without relabelling files: there is no dynamic ownership in this sandbox.
if ! grep -qs '^# hcp: run qemu as root' /etc/libvirt/qemu.conf; then
    printf '# hcp: run qemu as root\nuser = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n' \
        >> /etc/libvirt/qemu.conf
fi

running() { pgrep -x "$1" >/dev/null 2>&1; }
running virtlogd || virtlogd -d
running libvirtd || libvirtd -d

for _ in $(seq 1 100); do
    virsh -c "$URI" version >/dev/null 2>&1 && break
    sleep 0.2
done
if ! virsh -c "$URI" version >/dev/null 2>&1; then
    echo "setup.sh: libvirtd does not answer on $URI" >&2
    exit 1
fi

if ! virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1; then
    virsh -c "$URI" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
fi
virsh -c "$URI" pool-autostart "$POOL" >/dev/null 2>&1 || true
if [ "$(virsh -c "$URI" pool-info "$POOL" | awk '/^State:/ {print $2}')" != running ]; then
    virsh -c "$URI" pool-start "$POOL" >/dev/null
fi
if [ ! -f "$POOL_DIR/$BASE" ]; then
    qemu-img create -q -f qcow2 "$POOL_DIR/$BASE" 64M
fi
virsh -c "$URI" pool-refresh "$POOL" >/dev/null

echo "libvirt ready: $(virsh -c "$URI" version --daemon | awk '/daemon/ {print "libvirtd " $NF}'), $URI, pool $POOL at $POOL_DIR, base image ${BASE%.qcow2}"
