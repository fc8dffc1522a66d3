#!/usr/bin/env bash
# Download the Debian packages the offline benchmark uses and unpack them into
# $MARS_DATA/system (default ~/.cache/mars/system). Nothing is installed system-wide,
# so only `apt-get update` on a machine with no package lists needs root.
# Idempotent: a package already unpacked is skipped.
set -uo pipefail
DATA=${MARS_DATA:-$HOME/.cache/mars}
DEST=$DATA/system
DEBS=$DATA/debs
PKGS=(fluid-soundfont-gm timgm6mb-soundfont fonts-noto-color-emoji tuxpaint-stamps-default openttd-opensfx)
log() { printf '\033[1m[data-packages]\033[0m %s\n' "$*"; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
  else return 1; fi
}
command -v apt-get >/dev/null || { log "no apt-get (not Debian/Ubuntu): skipping"; exit 1; }
mkdir -p "$DEST" "$DEBS"
missing=()
for p in "${PKGS[@]}"; do [ -f "$DEST/.unpacked-$p" ] || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && { log "all ${#PKGS[@]} packages already unpacked in $DEST"; exit 0; }
if ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
  log "package lists are empty: running apt-get update (needs root)"
  as_root apt-get update -qq || { log "cannot run apt-get update without root or passwordless sudo"; exit 1; }
fi
status=0
for p in "${missing[@]}"; do
  (cd "$DEBS" && rm -f "${p}"_*.deb && apt-get download -qq "$p" 2>/dev/null) \
    || { log "warning: could not download $p"; status=1; continue; }
  deb=$(ls "$DEBS/${p}"_*.deb | head -n1)
  dpkg-deb -x "$deb" "$DEST" && echo "$(basename "$deb")" > "$DEST/.unpacked-$p" && rm -f "$deb" \
    && log "unpacked $p" || { log "warning: could not unpack $p"; status=1; }
done
exit $status
