#!/usr/bin/env bash
# Copies the photographs of Debian's mate-backgrounds package into photos/ at
# the repository root, or into the folder given as the first argument. They are
# real JPEG and PNG photos for trying the thumbnail template by hand.
#
# Usage: scripts/fetch-photos.sh [TARGET_FOLDER]
#
# Needs apt-get and dpkg-deb (Debian or Ubuntu). Does nothing when the target
# folder already contains JPEG or PNG files.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$repo_root/photos}"

existing=0
if [ -d "$target" ]; then
  existing="$(find "$target" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)"
fi
if [ "$existing" -gt 0 ]; then
  echo "fetch-photos: $target already contains $existing photos; nothing to do"
  exit 0
fi

for tool in apt-get dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    echo "fetch-photos: $tool not found; this script needs a Debian or Ubuntu system" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-photos: downloading the mate-backgrounds package"
if ! (cd "$work" && apt-get download mate-backgrounds); then
  echo "fetch-photos: download failed; updating the package lists and trying again"
  apt-get update
  (cd "$work" && apt-get download mate-backgrounds)
fi

package="$(find "$work" -maxdepth 1 -name 'mate-backgrounds_*.deb' | head -n 1)"
if [ -z "$package" ]; then
  echo "fetch-photos: apt-get download produced no mate-backgrounds .deb file in $work" >&2
  exit 1
fi
dpkg-deb -x "$package" "$work/extracted"

mkdir -p "$target"
count=0
# Only raster photographs: the package also contains SVG drawings and XML slide shows.
while IFS= read -r -d '' photo; do
  cp "$photo" "$target/"
  count=$((count + 1))
done < <(find "$work/extracted" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -print0)

if [ "$count" -eq 0 ]; then
  echo "fetch-photos: the package contained no JPEG or PNG files" >&2
  exit 1
fi
size="$(du -sh "$target" | cut -f1)"
echo "fetch-photos: copied $count photos ($size) into $target"
