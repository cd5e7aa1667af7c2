#!/usr/bin/env bash
# Installs what building and booting rtedge images needs, and only what is
# missing: the x86_64-unknown-none target, QEMU (+ qboot, redis-cli) from
# Debian, uhyve 0.10.0 from crates.io. Takes well under a second when all
# is there.
set -euo pipefail

UHYVE_VERSION=0.10.0
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$CARGO_BIN"

have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        echo "deps: need root to run: $*" >&2
        return 1
    fi
}

# 1. The kernel target.
if ! rustup target list --installed | grep -qx x86_64-unknown-none; then
    echo "deps: adding the x86_64-unknown-none target"
    rustup target add x86_64-unknown-none
fi
# `make lint`: rustfmt and clippy.
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
        echo "deps: adding the $component component"
        rustup component add "$component"
    fi
done

# 2. Debian packages: QEMU (qboot.rom comes with qemu-system-data), redis-cli
#    and redis-benchmark, iproute2.
packages=()
have qemu-system-x86_64 || packages+=(qemu-system-x86)
[ -f /usr/share/qemu/qboot.rom ] || packages+=(qemu-system-data)
have redis-cli || packages+=(redis-tools)
# `ip netns` and tap devices for the uhyve end-to-end tests.
have ip || packages+=(iproute2)
# Disk images (make disk): GRUB for BIOS and UEFI, the ISO and FAT tools,
# qemu-img, and OVMF to boot them under UEFI.
[ -d /usr/lib/grub/i386-pc ] || packages+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || packages+=(grub-efi-amd64-bin)
have grub-mkrescue || packages+=(grub-common)
have xorriso || packages+=(xorriso)
have mformat || packages+=(mtools)
have qemu-img || packages+=(qemu-utils)
have objcopy || packages+=(binutils)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -f /usr/share/OVMF/OVMF_CODE.fd ] || packages+=(ovmf)
if [ "${#packages[@]}" -gt 0 ]; then
    echo "deps: installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when the install cannot find something.
    if ! as_root apt-get install -y "${packages[@]}"; then
        as_root apt-get update
        as_root apt-get install -y "${packages[@]}"
    fi
fi

# 2b. libvirt for the fleet test (`make fleet`): libvirtd with its QEMU
#     driver (the test starts a session daemon of its own: no systemd, no
#     system instance, so not libvirt-daemon-system) and virsh; qemu-img for
#     the per-appliance disk overlays. Without recommends: they would add
#     the LXC, Xen and VirtualBox drivers and lvm2.
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
libvirt_packages=()
for package in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-utils; do
    deb_installed "$package" || libvirt_packages+=("$package")
done
if [ "${#libvirt_packages[@]}" -gt 0 ]; then
    echo "deps: installing ${libvirt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends "${libvirt_packages[@]}"; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends "${libvirt_packages[@]}"
    fi
fi

# 2c. Prometheus for the metrics scrape test (e2e `metrics`): the server
#     (it scrapes GET /metrics) and promtool (it checks the exposition).
#     Without recommends (they would add node-exporter and its services).
if ! have prometheus; then
    echo "deps: installing prometheus"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y --no-install-recommends prometheus; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends prometheus
    fi
fi

# 3. uhyve, the Hermit hypervisor (pinned: the boot protocol depends on it).
uhyve_bin="$(command -v uhyve || echo "$CARGO_BIN/uhyve")"
if ! "$uhyve_bin" --version 2>/dev/null | grep -qx "uhyve $UHYVE_VERSION"; then
    echo "deps: installing uhyve $UHYVE_VERSION"
    cargo install uhyve --version "$UHYVE_VERSION" --locked
fi
