#!/bin/sh
# Install this photosearch bundle for the current user: the app folder, a `photosearch` command, the menu entry
# and the icons. Nothing else on the system is touched; it needs no Python.
#
#   ./install.sh               install to ~/.local/opt/photosearch (DEST=... to choose), command in ~/.local/bin
#   ./install.sh --uninstall   remove what install.sh installed (your libraries and settings are kept)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
DEST=${DEST:-$HOME/.local/opt/photosearch}
BIN=${BIN:-$HOME/.local/bin}
SIZES="16 24 32 48 64 128 256 512"

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$BIN/photosearch" "$DATA/applications/photosearch.desktop"
    for n in $SIZES; do rm -f "$DATA/icons/hicolor/${n}x${n}/apps/photosearch.png"; done
    rm -rf "$DEST"
    echo "photosearch removed from $DEST"
    exit 0
fi

if [ "$HERE" != "$DEST" ]; then
    rm -rf "$DEST"
    mkdir -p "$(dirname "$DEST")"
    cp -a "$HERE" "$DEST"
fi
mkdir -p "$BIN" "$DATA/applications"
ln -sf "$DEST/photosearch" "$BIN/photosearch"
for n in $SIZES; do
    if [ -f "$DEST/icons/photosearch-$n.png" ]; then
        mkdir -p "$DATA/icons/hicolor/${n}x${n}/apps"
        cp "$DEST/icons/photosearch-$n.png" "$DATA/icons/hicolor/${n}x${n}/apps/photosearch.png"
    fi
done
sed -e "s|^Exec=.*|Exec=\"$DEST/photosearch\"|" -e "s|^TryExec=.*|TryExec=$DEST/photosearch|" \
    "$DEST/photosearch.desktop" > "$DATA/applications/photosearch.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$DATA/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$DATA/icons/hicolor" || true
echo "photosearch installed in $DEST; run 'photosearch' (from $BIN) or pick it from the applications menu"
