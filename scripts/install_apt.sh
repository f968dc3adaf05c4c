#!/bin/sh
# Debian packages the mini-HEAR suite renders its audio from (eval/minihear).
# Idempotent: does nothing (no apt-get update) when everything is installed.
# Run as root (or via sudo). Usage: sh scripts/install_apt.sh
set -eu

PACKAGES="sox libsndfile1 espeak-ng fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
hydrogen-drumkits sound-theme-freedesktop frozen-bubble-data lbreakout2-data neverball-data pingus-data \
asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav \
asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav fillets-ng-data-cs fillets-ng-data-nl"
# Real recordings for the --small suite (eval/minihear/realtasks.py): about 190 MB of downloads.
# Heavy packages (0ad-data, supertuxkart-data, ...) are never installed: the corpus
# build fetches them into ~/.cache/hear-abt (eval/minihear/debs.py).

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install_apt.sh: all mini-HEAR packages already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_apt.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
