#!/usr/bin/env bash
# The e2e node's devices: loop devices over files under $E2E_STATE/devices (see overlay/configmap-patch.yaml).
#   devices.sh up     create them (idempotent: a device already bound to its file is kept)
#   devices.sh down   swapoff, umount, detach, remove the files (safe when nothing is there)
#   devices.sh show   list them
# Fixed loop numbers (240-249) so the DiscoveryConfig can name them; `up` fails if another user holds one.
# loop248 is the local block PersistentVolume of scenario 11 (no group names it: the scenario adds one for its
# run); loop249 is the partitioned disk of scenario 12 (group parts).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cluster/lib.sh"
[[ $(id -u) == 0 ]] || die "run as root"
DEV_DIR=$E2E_STATE/devices
MNT=$DEV_DIR/mnt
# loop number : size in MiB : what
LOOPS=(240:64:plain 241:65:plain 242:66:plain 243:40:ext4 244:41:swap 245:48:gpt 246:20:plain 247:21:plain
	248:24:plain 249:50:gpt)

backing() { losetup -n -O BACK-FILE "/dev/loop$1" 2>/dev/null | sed 's/ *$//' || true; }

up() {
	command -v sfdisk >/dev/null && command -v partx >/dev/null || {
		log "installing fdisk (sfdisk)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fdisk util-linux >/dev/null
	}
	mkdir -p "$DEV_DIR" "$MNT"
	local e n size kind f b
	# Scenario 14 binds two of these numbers to each other's file for a while; a run cut short then leaves them so.
	for e in "${LOOPS[@]}"; do
		n=${e%%:*}
		b=$(backing "$n")
		if [[ -n $b && $b != "$DEV_DIR/loop$n.img" && $(dirname "$b") == "$DEV_DIR" ]]; then
			log "/dev/loop$n is bound to $b, another of the suite's files (a run cut short): detaching it"
			losetup -d "/dev/loop$n"
		fi
	done
	for e in "${LOOPS[@]}"; do
		IFS=: read -r n size kind <<<"$e"
		f=$DEV_DIR/loop$n.img
		b=$(backing "$n")
		if [[ -n $b ]]; then
			[[ $b == "$f" ]] || die "/dev/loop$n is in use by $b; free it or change the numbers in $0 and the overlay"
			continue
		fi
		rm -f "$f"
		truncate -s "${size}M" "$f"
		case $kind in
		ext4) mkfs.ext4 -q -F "$f" ;;
		swap) chmod 600 "$f"; mkswap -q "$f" >/dev/null ;;
		gpt) printf 'label: gpt\n,16M\n,\n' | sfdisk -q "$f" >/dev/null ;;
		esac
		losetup "/dev/loop$n" "$f"
		case $kind in
		ext4) mount "/dev/loop$n" "$MNT" ;;
		swap) swapon "/dev/loop$n" ;;
		# The kernel may not parse partition tables itself (no CONFIG_EFI_PARTITION): add them from user space.
		gpt) partx -a "/dev/loop$n" 2>/dev/null || true ;;
		esac
	done
	for n in 245 249; do
		[[ -b /dev/loop${n}p1 && -b /dev/loop${n}p2 ]] || die "/dev/loop${n}p1/p2 missing after partx"
	done
	mountpoint -q "$MNT" || mount /dev/loop243 "$MNT"
	grep -q '^/dev/loop244 ' /proc/swaps || swapon /dev/loop244
	[[ -e /dev/fuse ]] || die "/dev/fuse missing"
	log "devices up: $(losetup -n -O NAME -l | grep -c 'loop24[0-9]$') loop devices, $MNT mounted, /dev/loop244 swap"
}

down() {
	local e n f kind l
	swapoff /dev/loop244 2>/dev/null || true
	# the kubelet's loop device over the block PV (scenario 11), if a run was killed before the kubelet let go
	if [[ -b /dev/loop248 ]]; then
		for l in $(losetup -l -n -O NAME -j /dev/loop248 2>/dev/null); do
			log "WARNING: detaching $l, a loop device over /dev/loop248 (the kubelet's, left by a killed run)"
			losetup -d "$l" || true
		done
	fi
	if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT"; fi
	for e in "${LOOPS[@]}"; do
		IFS=: read -r n _ kind <<<"$e"
		f=$DEV_DIR/loop$n.img
		[[ $(backing "$n") == "$f" ]] || continue
		[[ $kind == gpt ]] && { partx -d "/dev/loop$n" 2>/dev/null || true; }
		losetup -d "/dev/loop$n" || log "WARNING: could not detach /dev/loop$n"
	done
	# the loop devices themselves (created at these numbers by losetup): LOOP_CTL_REMOVE, where python3 is there
	if command -v python3 >/dev/null; then
		python3 - "${LOOPS[@]%%:*}" <<'PY' || true
import fcntl, os, sys
fd = os.open("/dev/loop-control", os.O_RDWR)
for n in sys.argv[1:]:
    try:
        fcntl.ioctl(fd, 0x4C81, int(n))  # LOOP_CTL_REMOVE; fails (EBUSY) for a device still bound
    except OSError:
        pass
PY
	fi
	# loop devices of these files under other numbers (a run that was killed half way)
	losetup -n -O NAME,BACK-FILE -l 2>/dev/null | awk -v d="$DEV_DIR/" 'index($2,d)==1 {print $1}' |
		while read -r l; do losetup -d "$l" || true; done
	[[ -d $DEV_DIR ]] && { rmdir "$MNT" 2>/dev/null || true; rm -f "$DEV_DIR"/*.img; rmdir "$DEV_DIR" 2>/dev/null || true; }
	log "devices down"
}

case ${1:-} in
up) up ;;
down) down ;;
show) losetup -l | grep -E 'NAME|loop24[0-9] ' || true; losetup -l -j /dev/loop248 2>/dev/null || true; grep loop24 /proc/swaps || true; findmnt "$MNT" || true ;;
*) die "usage: $0 up|down|show" ;;
esac
