#!/bin/sh
# /init of the test VM: mount the basics, run /scenario.sh, report, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
. /lib/enforcer-test.sh
echo "@@begin $(uname -r)"
if [ -f /scenario.sh ]; then
    . /scenario.sh
fi
echo "@@done"
sync
poweroff -f
