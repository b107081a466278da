#!/usr/bin/env bash
# build-debian-image.sh [DIR]: builds the Debian guest image the compute agent boots as a real
# distribution (issue 23) from Debian's packages with debootstrap, once per machine: when
# DIR/debian-12.qcow2 exists, built by this recipe, it does nothing. DIR defaults to
# /var/cache/govcloud/images (the compute agent's default image store). Files: debian-12.qcow2,
# debian-12.qcow2.sha256 (sha256sum format), debian-12.qcow2.recipe.
#
# The image is a whole disk (MBR, EXTLINUX, one ext4 partition) in qcow2: Debian 12 with the cloud
# kernel (virtio built in, small), systemd, systemd-networkd, openssh-server and qemu-guest-agent,
# a serial console on ttyS0, and govcloud-seed.service, which reads the VM's NoCloud seed (a
# disk labelled "cidata" the compute agent writes per VM) before the network and sshd start:
# hostname, root's SSH authorized keys and the NICs' addresses and gateways (IPv4 and IPv6).
# cloud-init is not used: it brings Python and four boot stages that take tens of seconds
# under TCG; the seed unit is 60 lines of shell reading the subset of NoCloud the agent writes.
#
# Needs root, debootstrap, qemu-img, sfdisk, extlinux, losetup (a loop device; no partition
# scanning: the partition is mapped by offset, so it works where loop partitions do not) and a Debian mirror
# (DEBIAN_MIRROR, default debootstrap's own). Prints the sha256 to put into the Image object.
set -euo pipefail

dir=${1:-/var/cache/govcloud/images}
suite=${DEBIAN_SUITE:-bookworm}
name=debian-12
img=$dir/$name.qcow2
here=$(cd "$(dirname "$0")" && pwd)
mbr=/usr/lib/syslinux/mbr/mbr.bin

# The recipe (this script and the files it puts into the image) is stamped beside the image: a
# changed recipe builds the image anew, an unchanged one is built once.
recipe=$(cat "$0" "$here"/debian-image/* | sha256sum | cut -d' ' -f1)
if [[ -f $img && -f $img.sha256 && "$(cat "$img.recipe" 2>/dev/null)" == "$recipe" ]]; then
  echo "image-debian: $img is up to date (sha256 $(cut -d' ' -f1 "$img.sha256")); remove it to rebuild"
  exit 0
fi
[[ $EUID -eq 0 ]] || { echo "image-debian: needs root (debootstrap, loop devices)" >&2; exit 1; }
for t in debootstrap qemu-img sfdisk losetup mkfs.ext4 extlinux; do
  command -v "$t" >/dev/null || { echo "image-debian: $t not found; run 'sudo make deps'" >&2; exit 1; }
done

start=$(date +%s)
mkdir -p "$dir"
work=$(mktemp -d /var/tmp/gc-debian-image.XXXXXX)
root=$work/root
loop=""
cleanup() {
  for m in dev/pts dev proc sys ""; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  [[ -n $loop ]] && losetup -d "$loop" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 2G "$work/disk.raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$work/disk.raw"
[[ -f $mbr ]] || { echo "image-debian: $mbr not found; run 'sudo make deps' (syslinux-common)" >&2; exit 1; }
dd if="$mbr" of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
loop=$(losetup --show -f -o $((2048 * 512)) "$work/disk.raw")
# No 64bit feature: EXTLINUX (syslinux 6.04) does not read it.
mkfs.ext4 -q -O ^64bit -L root "$loop"
mkdir -p "$root"
mount "$loop" "$root"

pkgs=systemd-sysv,udev,dbus,kmod,linux-image-cloud-amd64,initramfs-tools,openssh-server,qemu-guest-agent,iproute2,iputils-ping,netbase
echo "image-debian: debootstrap $suite (minbase + $pkgs)"
DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" ${DEBIAN_MIRROR:-} >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2; echo "image-debian: debootstrap failed (is a Debian mirror reachable? set DEBIAN_MIRROR)" >&2; exit 1; }

mount --bind /dev "$root/dev"; mount --bind /dev/pts "$root/dev/pts"
mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"

echo "/dev/vda1 / ext4 defaults,errors=remount-ro 0 1" > "$root/etc/fstab"
echo debian > "$root/etc/hostname"
# Every VM gets its own SSH host key at first boot (govcloud-seed), never the image's.
rm -f "$root"/etc/ssh/ssh_host_*
printf 'PasswordAuthentication no\nPermitRootLogin prohibit-password\n' > "$root/etc/ssh/sshd_config.d/govcloud.conf"
install -m 0755 "$here/debian-image/govcloud-seed" "$root/usr/local/sbin/govcloud-seed"
install -m 0644 "$here/debian-image/govcloud-seed.service" "$root/etc/systemd/system/govcloud-seed.service"
chroot "$root" systemctl enable govcloud-seed.service systemd-networkd.service serial-getty@ttyS0.service >/dev/null 2>&1
chroot "$root" systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
chroot "$root" passwd -d root >/dev/null

# EXTLINUX in the partition's boot sector (syslinux's MBR, written above, chains to it); paths are the kernel's
# and initramfs's real names (no symlinks), found here.
kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -1)
mkdir -p "$root/boot/extlinux"
cat > "$root/boot/extlinux/extlinux.conf" <<CFG
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/initrd.img-${kernel#vmlinuz-}
  APPEND root=/dev/vda1 ro console=tty0 console=ttyS0,115200 net.ifnames=0
CFG
extlinux --install "$root/boot/extlinux" >"$work/extlinux.log" 2>&1 || { cat "$work/extlinux.log" >&2; exit 1; }
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root/etc/machine-id"
: > "$root/etc/machine-id"

sync
for m in dev/pts dev proc sys ""; do umount "$root/$m"; done
losetup -d "$loop"; loop=""
qemu-img convert -c -O qcow2 "$work/disk.raw" "$img.tmp"
(cd "$dir" && sha256sum "$name.qcow2.tmp" | sed "s/\.tmp\$//" > "$name.qcow2.sha256.tmp")
mv "$img.tmp" "$img"; mv "$img.sha256.tmp" "$img.sha256"; echo "$recipe" > "$img.recipe"
echo "image-debian: built $img in $(( $(date +%s) - start )) s, $(du -h "$img" | cut -f1), sha256 $(cut -d' ' -f1 "$img.sha256")"
