#!/bin/sh
# Run one rendered container as a process the way its pod would run it, in a private mount
# namespace (started by `unshare --mount --propagation private`, so nothing here reaches the
# host's mounts):
#   - each volume the pod mounts is bound at its mountPath (ConfigMap files, emptyDirs),
#   - the root file system is read-only when the pod says readOnlyRootFilesystem,
#   - the command runs as the pod's runAsUser/runAsGroup with no supplementary groups and
#     no_new_privs (allowPrivilegeEscalation: false).
# usage: podrun.sh POD_DIR UID GID RO(0|1) -- command...
#   POD_DIR/mounts/<n> is bound at the path in POD_DIR/mounts/<n>.path (in order).
set -eu
pod=$1 uid=$2 gid=$3 ro=$4; shift 5
# This machine's Python lives under /root (mode 0700), where an image has it world-readable:
# show the pod the interpreter, not the rest of /root.
if [ -d /root/.pyenv ]; then
  mkdir -p "$pod/pyenv"
  mount --bind /root/.pyenv "$pod/pyenv"
  mount -t tmpfs -o mode=0755,size=1m tmpfs /root
  mkdir /root/.pyenv
  mount --bind "$pod/pyenv" /root/.pyenv
fi
tmp_src=""
for p in "$pod"/mounts/*.path; do
  [ -e "$p" ] || continue
  target=$(cat "$p"); src=${p%.path}
  if [ "$target" = /tmp ]; then tmp_src=$src; continue; fi   # last: $pod may live under /tmp
  mount --bind "$src" "$target"
done
[ -n "$tmp_src" ] && mount --bind "$tmp_src" /tmp
# Last: a bind made after this would inherit the read-only flag.
[ "$ro" = 1 ] && mount -o remount,bind,ro /
cd /
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs -- "$@"
