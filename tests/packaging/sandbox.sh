#!/bin/sh
# A throwaway root file system view for tests/packaging.rs, so that installing packages and units never
# changes the host.
#
#   sandbox.sh files   WORK    mount namespace only; runs `sleep` (the test enters it with nsenter)
#   sandbox.sh systemd WORK    systemd as PID 1, in its own PID, network, UTS and cgroup namespaces
#
# Both: a private mount namespace in which /usr, /etc and /var are overlays (the host's directories
# below, upper layers in WORK) and /run, /tmp and /var/tmp are tmpfs. Whatever dpkg, systemd or the
# daemon writes lands in WORK, which the test deletes. WORK must not be under one of those directories.
# The script writes WORK/ready once the mounts are in place.
#
# systemd mode: the cgroup namespace is rooted at a fresh child of the host's cgroup2 hierarchy (its
# path in WORK/cgroup, for the test to remove), so systemd's slices collide neither with the host's nor
# with another test's. systemd boots into hp-test.target, which pulls in nothing: no other unit of the
# host (udev, sysctl, tmpfiles, journald, networking...) starts. `container=` makes systemd behave as in
# a container (no kernel modules, no host name from /etc/hostname, console logging into WORK/systemd.log).
set -eu
mode=$1 work=$2

setup='
for d in usr etc var; do
  mkdir -p "$work/$d.upper" "$work/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d.upper,workdir=$work/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
'

case "$mode" in
files)
  exec unshare --mount --propagation private sh -eu -c "work=\$1; $setup"'
touch "$work/ready"
exec sleep 3600
' sh "$work"
  ;;
systemd)
  cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  [ -n "$cg2" ] || { echo "sandbox.sh: no cgroup2 hierarchy is mounted" >&2; exit 91; }
  cg="$cg2/hostpolicyd-test-$$"
  mkdir "$cg"
  echo "$cg" > "$work/cgroup"
  echo $$ > "$cg/cgroup.procs"
  exec unshare --pid --fork --mount-proc --mount --propagation private --net --uts --cgroup \
    sh -eu -c "work=\$1; $setup"'
mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /etc/systemd/system
cat > /etc/systemd/system/hp-test.target <<UNIT
[Unit]
Description=hostpolicyd packaging test: nothing but what the test starts
DefaultDependencies=no
UNIT
hostname hp-test
ip link set lo up
touch "$work/ready"
exec env -i container=hostpolicyd-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=hp-test.target --log-target=console --show-status=no \
  >"$work/systemd.log" 2>&1
' sh "$work"
  ;;
*)
  echo "usage: sandbox.sh files|systemd WORK" >&2
  exit 64
  ;;
esac
