#!/bin/sh
# A throwaway root file system view for tests/packaging.rs, so that installing packages and units never
# changes the host.
#
#   sandbox.sh files   WORK    mount and network namespaces; runs `sleep` (the test enters it with nsenter)
#   sandbox.sh systemd WORK    systemd as PID 1, in its own PID, mount, network, UTS and cgroup namespaces
#
# Both: a private mount namespace in which /usr, /etc and /var are overlays (the host's directories
# below, upper layers on a tmpfs of the sandbox's own) and /run, /tmp and /var/tmp are tmpfs. Whatever
# dpkg, systemd or the daemon writes stays in the sandbox and goes away with it. A network namespace of
# its own: what the maintainer scripts or the daemon do to nftables never reaches the host's tables.
#
# The sandbox sees none of the host's /tmp, /run or /var/tmp, and only the host's /usr, /etc and /var as
# they were when it started, wherever WORK and the checkout are (CI may clone under /tmp): the test
# copies what the sandbox needs into it through a pipe. WORK only receives the logs, through descriptors
# opened before the mounts: sandbox.log (this script's output, from the test) and systemd.log (systemd's
# console). The script prints `ready` on its standard output once the mounts are in place.
#
# systemd mode: the cgroup namespace is rooted at a fresh child of the host's cgroup2 hierarchy (its
# path in WORK/cgroup, for the test to remove), so systemd's slices collide neither with the host's nor
# with another test's. systemd boots into hp-test.target, which pulls in nothing: no other unit of the
# host (udev, sysctl, tmpfiles, journald, networking...) starts. `container=` makes systemd behave as in
# a container (no kernel modules, no host name from /etc/hostname, console logging into systemd.log).
set -eu
mode=$1 work=$2

# The upper layers live on a tmpfs mounted on WORK/layers before anything is covered: an overlay cannot
# take its upper layer from inside its own lower directory (a checkout under /var), and a tmpfs is gone
# with the namespace.
setup='
exec 4>>"$work/systemd.log"
mkdir -p "$work/layers"
mount -t tmpfs -o mode=0700 tmpfs "$work/layers"
for d in usr etc var; do
  mkdir -p "$work/layers/$d.upper" "$work/layers/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/layers/$d.upper,workdir=$work/layers/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
ip link set lo up
'

case "$mode" in
files)
  exec unshare --mount --propagation private --net sh -eu -c "work=\$1; $setup"'
exec 4>&-
echo ready
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
echo ready
exec env -i container=hostpolicyd-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=hp-test.target --log-target=console --show-status=no \
  >&4 2>&4 4>&-
' sh "$work"
  ;;
*)
  echo "usage: sandbox.sh files|systemd WORK" >&2
  exit 64
  ;;
esac
