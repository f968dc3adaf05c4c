#!/usr/bin/env bash
# Install heareval, hearvalidator and the peer HEAR modules on Python 3.11.
#
# Why this script: heareval 2021.1.3 and hearvalidator 2021.0.6 pin
# numpy==1.19.2 / numba==0.48 / Python<3.9, which cannot install on 3.11.
# We install their real imports at modern versions (requirements/hear.txt)
# and then the packages themselves with --no-deps. Idempotent: packages
# already present at the wanted version are skipped. Assumes torch and
# torchaudio are installed (requirements/torch.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

installed_version() {  # prints the installed version of $1, or nothing
    "$PY" - "$1" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PYEOF
}

"$PY" -m pip install -q -r requirements/hear.txt

install_nodeps() {  # name version [extra pip args...]
    local name="$1" want="$2"; shift 2
    if [ "$(installed_version "$name")" = "$want" ]; then
        echo "$name==$want already installed"
    else
        "$PY" -m pip install -q --no-deps "$@" "$name==$want"
    fi
}
install_nodeps heareval 2021.1.3
install_nodeps hearvalidator 2021.0.6 --ignore-requires-python
# hearbaseline pins numba==0.48 and pulls speechbrain/transformers/torchopenl3
# for modules we do not use; its naive module needs only torch and librosa.
install_nodeps hearbaseline 2021.1.1
install_nodeps torchcrepe 0.0.24
