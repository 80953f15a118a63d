#!/bin/sh
# Boots systemd as PID 1 in throwaway namespaces, for tests/packaging.rs (the unit under a real systemd).
#
#   systemd-ns.sh WORK UNIT BINARY
#
# Namespaces: PID (systemd is PID 1), mount (private: nothing mounted here reaches the host), network
# (its own, with only lo), UTS (systemd may set the host name) and cgroup (rooted at a fresh child of
# the host's cgroup2 hierarchy, so that systemd's slices do not collide with the host's or with another
# test's). The host's file system is never written: /etc, /var and /usr/sbin are overlays whose upper
# layers live in WORK, /run, /tmp and /var/tmp are tmpfs. In the overlays the script installs the unit
# (/lib/systemd/system is not touched: the unit goes to /etc/systemd/system, as an admin's copy would)
# and the binary at /usr/sbin/hostpolicyd, where the unit's ExecStart= expects it, then boots into
# hp-test.target, a target that pulls in nothing, so that no other unit of the host (udev, sysctl,
# tmpfiles, journald...) starts. `container=` tells systemd it runs in a container (console logging,
# no kernel-module or host-name setup).
#
# The test reaches the instance with `nsenter -t PID -m -p -n systemctl ...`, PID being the host PID of
# the unshare'd child (systemd). WORK/systemd.log has systemd's console output.
set -eu
work=$1 unit=$2 bin=$3

cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[ -n "$cg2" ] || { echo "no cgroup2 hierarchy mounted" >&2; exit 91; }
cg="$cg2/hostpolicyd-test-$$"
mkdir "$cg"
echo "$cg" > "$work/cgroup"
echo $$ > "$cg/cgroup.procs"

exec unshare --pid --fork --mount-proc --mount --propagation private --net --uts --cgroup \
  sh -eu -c '
work=$1 unit=$2 bin=$3
mount -t cgroup2 none /sys/fs/cgroup
for d in etc var usr/sbin; do
  name=$(echo "$d" | tr / -)
  mkdir -p "$work/$name.upper" "$work/$name.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$name.upper,workdir=$work/$name.work" "/$d"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mkdir -p /etc/systemd/system /etc/hostpolicy.d
cp "$unit" /etc/systemd/system/hostpolicyd.service
cat > /etc/systemd/system/hp-test.target <<UNIT
[Unit]
Description=hostpolicyd packaging test: nothing but what the test starts
DefaultDependencies=no
UNIT
install -m 0755 "$bin" /usr/sbin/hostpolicyd
hostname hp-test
ip link set lo up
exec env -i container=hostpolicyd-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=hp-test.target --log-target=console --log-level=info \
  --show-status=no >"$work/systemd.log" 2>&1
' sh "$work" "$unit" "$bin"
