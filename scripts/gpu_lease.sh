#!/usr/bin/env bash
# Everything one lent GPU call does, in order of value, each stage under its
# own time limit so a slow stage cannot cost the others their results:
#   1. log-mel cache of the packed corpus (gpu_corpus/, eval/corpus/pack.py);
#   2. budgeted training runs (tools/gpu_train.py) -> $OUT/runs/NAME.pt, runs.json;
#      by default two continuations of checkpoints/default.pt, with and without the
#      frequency scaling (GPU_LEASE_RUNS to change);
#   3. the GPU check (tools/gpu_check.py) -> $OUT/gpu_check/gpu_check.{md,json}.
# Needs: gpu_corpus/ and .whl/ (soundfile, cffi, pycparser, hearvalidator)
# carried with the working tree. docs/dev/gpu_lease.md gives the preparation and the call.
# Usage: bash scripts/gpu_lease.sh [TRAIN_BUDGET_S_PER_RUN] [CHECK_LIMIT_S]
set -u
: "${OUT:?set OUT to the folder whose files come back}"
BUDGET=${1:-100}
CHECK_LIMIT=${2:-240}
CHECK_ONLY=${GPU_LEASE_CHECK_ONLY:-}  # e.g. "--only correctness --only train" to skip measured sections
DEVICE=${GPU_LEASE_DEVICE:-cuda}
BATCH=${GPU_LEASE_BATCH:-1024}
export PYTHONUNBUFFERED=1  # the whole log is in $OUT/lease.log (tee); the returned tail is mostly progress bars
t0=$(date +%s)
stamp() { echo "[lease $(( $(date +%s) - t0 )) s] $*"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# hear-validator imports tensorflow at the top but, for a torch model, uses only
# tf.Module in an isinstance test; the machine has no tensorflow, so a stub
# with that one class lets the validator's torch path run unchanged.
# The stub is seen by hear-validator alone (a wrapper puts it first on its path):
# anything else that probes for tensorflow (torch's tensorboard writer) must not find it.
mkdir -p /tmp/tfstub/tensorflow /tmp/vbin && echo 'class Module: pass' > /tmp/tfstub/tensorflow/__init__.py
printf '#!/bin/sh\nPYTHONPATH=/tmp/tfstub:$PYTHONPATH exec /tmp/site/bin/hear-validator "$@"\n' > /tmp/vbin/hear-validator && chmod +x /tmp/vbin/hear-validator
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/vbin:/tmp/site/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
python3 -c "import torch, torchaudio, soundfile; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__, 'soundfile', soundfile.__version__, 'libsndfile', soundfile.__libsndfile_version__)" || exit 1

stamp "1. log-mel cache"
timeout 150 python3 -m hear_abt.train --data gpu_corpus --cache-dir /tmp/mels --prepare --set workers="$(nproc)" || exit 1
CACHE=$(ls -d /tmp/mels/*/ | head -1)
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in d if k in ('n_clips', 'total_frames', 'skipped', 'norm_stats')})" "$CACHE/index.json"

# The runs continue the bundled default (--init-from keeps its input normalisation,
# so `hear-abt init --stats-from checkpoints/default.pt` stays their random reference);
# GPU_LEASE_RUNS replaces them, e.g. "lr0.8:lr_weights=0.8,lr_biases=0.0192" for one run from random weights.
# The pair tests RandomResizeCrop's frequency scaling at GPU scale (docs/experiments/retraining.md: on CPU, without it,
# pitch .808 against .688 and 8 of 11 tasks ahead at equal steps).
CONT="init_from=checkpoints/default.pt,lr_weights=0.4,lr_biases=0.0096"
RUNS=${GPU_LEASE_RUNS:-"cont-lr0.4:$CONT cont-lr0.4-nofreq:$CONT,rrc_freq_scale=[1.0,1.0]"}
RUN_ARGS=()
read -r -a RUN_LIST <<< "$RUNS"  # split on spaces without glob expansion ([1.0,1.0] is a glob pattern)
for r in "${RUN_LIST[@]}"; do RUN_ARGS+=(--run "$r"); done
stamp "2. training runs, ${BUDGET} s each: $RUNS"
timeout $(( ${#RUN_LIST[@]} * BUDGET + 60 )) python3 -m tools.gpu_train --data "$CACHE" --out "$OUT/runs" --budget-s "$BUDGET" --device "$DEVICE" \
  --set batch_size="$BATCH" --set amp=bf16 "${RUN_ARGS[@]}"
stamp "training done (rc $?)"

stamp "3. GPU check, at most ${CHECK_LIMIT} s"
python3 -m tools.gpu_check --prepare --from-cache "$CACHE" --prepared /tmp/prep || exit 1
timeout "$CHECK_LIMIT" python3 -m tools.gpu_check --device "$DEVICE" --prepared /tmp/prep --out "$OUT/gpu_check" $CHECK_ONLY
stamp "GPU check done (rc $?)"
