#!/usr/bin/env bash
# Fetch the packaged material the offline benchmark uses, into $MARS_DATA (default ~/.cache/mars):
#  - five Debian data packages, downloaded and unpacked into $MARS_DATA/system (not installed),
#  - three npm icon sets into $MARS_DATA/npm: @iconify-json/game-icons (CC-BY-3.0 silhouettes),
#    @iconify-json/twemoji (CC-BY-4.0) and @iconify-json/fluent-emoji-flat (MIT), two emoji designs.
# Root is needed only for `apt-get update` on a machine with no package lists and to
# install Debian's npm where no npm exists. Idempotent: what is there is skipped.
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
NPM_SETS=(@iconify-json/game-icons@1.2.4 @iconify-json/twemoji@1.2.5 @iconify-json/fluent-emoji-flat@1.2.6)
fetch_icon_sets() {
  local want=()
  for spec in "${NPM_SETS[@]}"; do
    [ -f "$DATA/npm/node_modules/${spec%@*}/icons.json" ] || want+=("$spec")
  done
  [ ${#want[@]} -eq 0 ] && { log "npm icon sets already in $DATA/npm"; return 0; }
  if ! command -v npm >/dev/null; then
    log "npm missing: installing Debian's npm (needs root)"
    as_root apt-get install -y -qq --no-install-recommends npm >/dev/null || { log "warning: no npm; clarinet/tuba/xylophone images and two emoji styles unavailable"; return 1; }
  fi
  mkdir -p "$DATA/npm"
  npm install --prefix "$DATA/npm" --no-audit --no-fund --no-package-lock --silent "${want[@]}" \
    && log "installed ${want[*]} into $DATA/npm" || { log "warning: npm install ${want[*]} failed"; return 1; }
}
command -v apt-get >/dev/null || { log "no apt-get (not Debian/Ubuntu): skipping"; exit 1; }
mkdir -p "$DEST" "$DEBS"
missing=()
for p in "${PKGS[@]}"; do [ -f "$DEST/.unpacked-$p" ] || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "all ${#PKGS[@]} packages already unpacked in $DEST"
  fetch_icon_sets; exit $?
fi
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
fetch_icon_sets || status=1
exit $status
