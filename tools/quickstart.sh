#!/usr/bin/env bash
# The README's quick start. The sheep daemon, dog and the NBD front end are the next
# issue; until they land this builds everything and exercises the node-local store.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/collie-quickstart.XXXXXX")
echo "quickstart: not yet a cluster (sheep/dog come next); running the store bench in $dir"
target/release/storebench --dir "$dir" --seconds 3 --size 256M
rm -rf "$dir"
