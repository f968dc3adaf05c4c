#!/usr/bin/env bash
# One install for everything: Debian audio tools (mini-HEAR suite and tests),
# the tested torch/torchaudio pair, heareval + hearvalidator with modern
# dependencies, the test and lint tools (requirements/test.txt) and hear-abt
# itself (editable). Idempotent: a second run only
# checks. Used by README's first command and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
export PYTHON="$PY" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

bash scripts/install_apt.sh
"$PY" -m pip install -q -r requirements/torch.txt
bash scripts/install_hear.sh
"$PY" -m pip install -q -r requirements/test.txt
"$PY" -m pip install -q -r requirements/export.txt && "$PY" -m pip install -q --no-deps xares==0.1.3
"$PY" -m pip install -q --no-deps --no-build-isolation -e .
echo "hear-abt installed: $("$PY" -c 'import hear_abt; print(hear_abt.__version__, hear_abt.__file__)')"
