#!/usr/bin/env bash
# scripts/copy_shared.sh (the fresh-root check's copy of ../shared) must copy what a symbolic link
# points to: `cp -a LINK DEST` copied the link itself, so the root's /work/shared pointed at a path
# that does not exist inside the chroot, and every test needing the data failed there.
#   usage: copy_shared_test.sh SOURCE_DIR
set -u
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/real/data/hf"
echo weights >"$tmp/real/data/hf/model.safetensors"
ln -s real "$tmp/shared"   # ../shared as a link, the way a user often sets it up
mkdir -p "$tmp/root" "$tmp/root2"   # as the check makes $root/work first
fail=0
bash "$src/scripts/copy_shared.sh" "$tmp/shared" "$tmp/root/shared" || { echo "FAIL: copy_shared.sh exited $?"; fail=1; }
if [ -L "$tmp/root/shared" ]; then
  echo "FAIL: $tmp/root/shared is a symbolic link (-> $(readlink "$tmp/root/shared")); expected a copy of the directory"
  fail=1
elif [ "$(cat "$tmp/root/shared/data/hf/model.safetensors" 2>/dev/null)" != weights ]; then
  echo "FAIL: $tmp/root/shared/data/hf/model.safetensors missing or different; expected the linked directory's files"
  fail=1
fi
# A real directory (the usual case) still copies as before.
bash "$src/scripts/copy_shared.sh" "$tmp/real" "$tmp/root2/shared" >/dev/null 2>&1 || true
if [ "$(cat "$tmp/root2/shared/data/hf/model.safetensors" 2>/dev/null)" != weights ]; then
  echo "FAIL: a plain directory was not copied to $tmp/root2/shared"
  fail=1
fi
[ $fail -eq 0 ] && echo "copy_shared: a symlinked and a plain ../shared are both copied as directories: ok"
exit $fail
