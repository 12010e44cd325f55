#!/usr/bin/env bash
# Train the real-CT model on a lent GPU machine (the workplace's `device` tool) in one call.
#
# That machine is bare and offline, has PyTorch but not SimpleITK, and does not get ../shared;
# a call may run 10 minutes and a session gets 15 minutes of it in all. So:
#
#   here, once:  bash tools/device_train.sh --prepare       (with the project's .venv active)
#                (the SimpleITK wheel for its Python 3.12 and the anatomy label map into .device/,
#                 which git ignores; about 54 MB of the 64 MiB a call may carry)
#   there:       run(command="bash tools/device_train.sh 8 --iterations 6000 --validate-every 1000 ...",
#                    carry=[".device"], timeout_s=600)
#
# The first argument is the minutes after which training stops cleanly (synthesis included,
# `--stop-after`), the rest go to tools/train_real_ct_model.py as they are. The run folder lives
# in /tmp/device-run there (its case cache is too large to come back); the exported model, the
# history and the log are copied to $OUT (to the git-ignored .device/out/ when OUT is unset, as in a test run
# here; delete it before carrying .device), at most the 8 files a call returns.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=.device
ANATOMY=../shared/data/anatomy/s0011_labels.nii.gz

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$DEVICE_DIR" .git/info
    grep -qx "/$DEVICE_DIR/" .git/info/exclude 2>/dev/null || echo "/$DEVICE_DIR/" >> .git/info/exclude
    version=$(python3 -c "import SimpleITK, sys; sys.stdout.write(SimpleITK.Version_VersionString())") \
        || { echo "SimpleITK is not importable here: activate the project's .venv first"; exit 2; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DEVICE_DIR" "SimpleITK==$version"
    cp "$ANATOMY" "$DEVICE_DIR/"
    du -sh "$DEVICE_DIR"
    exit 0
fi

minutes=${1:?"usage: tools/device_train.sh MINUTES [train_real_ct_model.py options] (or --prepare, here)"}
shift
out=${OUT:-$DEVICE_DIR/out}
mkdir -p "$out"
if ! python3 -c "import SimpleITK" 2>/dev/null; then
    ls "$DEVICE_DIR"/*.whl >/dev/null 2>&1 || { echo "no SimpleITK and no $DEVICE_DIR/*.whl: run 'bash tools/device_train.sh --prepare' here and carry $DEVICE_DIR"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$DEVICE_DIR"/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/BoneSegmentation${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
anatomy="$DEVICE_DIR/s0011_labels.nii.gz"
[[ -f "$anatomy" ]] || anatomy="$ANATOMY"
run=${DEVICE_RUN:-/tmp/device-run}
python3 -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'no cuda',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
status=0
python3 tools/train_real_ct_model.py --out "$run" --anatomy "$anatomy" --workers "$(nproc)" \
    --stop-after "$minutes" "$@" 2>&1 | tee "$out/train.log" || status=$?
for f in bones-phantom-demo.pt candidate.pt history.jsonl; do
    [[ -f "$run/$f" ]] && cp "$run/$f" "$out/"
done
ls -la "$out"
exit "$status"
