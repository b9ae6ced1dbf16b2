#!/usr/bin/env bash
# Copies the shared data folder (../shared: models, tokenizers, text) to DEST, as the fresh-root
# check puts it beside the clone. Its own script so that tests/e2e/copy_shared_test.sh checks the
# copy without building a whole root.
#   usage: copy_shared.sh SHARED_DIR DEST     (DEST must not exist; its parent must)
set -euo pipefail
if [ $# -ne 2 ]; then echo "usage: copy_shared.sh SHARED_DIR DEST" >&2; exit 2; fi
# ../shared is often a symbolic link to a data disk; `cp -a LINK` copies the link, which points
# nowhere inside a chroot. pwd -P resolves it, so the directory it points to is copied.
src=$(cd "$1" && pwd -P) || { echo "copy_shared.sh: $1: not a directory" >&2; exit 2; }
if [ -e "$2" ] || [ -L "$2" ]; then echo "copy_shared.sh: $2 already exists; expected a new path" >&2; exit 2; fi
cp -a "$src" "$2"
