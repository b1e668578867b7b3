#!/usr/bin/env bash
# The GPU proof in one command, from the project's root on a GPU machine (benchmarks/gpu_proof.py says what it does):
#   bash benchmarks/gpu_proof.sh [--budget 540] [--resume DIR] [--skip tests,stride,throughput]
# On an offline machine, carry along what it lacks, as benchmarks/gpu_carry.sh packs it: .whl/ and .gpu/ (the data,
# and in .gpu/resume/ what a previous call brought back: then pass --resume .gpu/resume).
# On your own GPU machine with the project installed (make install), nothing needs carrying:
#   .venv/bin/python benchmarks/gpu_proof.py
# Run it, never source it: it changes no shell but its own.
export PROOF_T0=${PROOF_T0:-$(date +%s)}
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
if ! "$PY" -c "import ultralytics" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_proof: ultralytics is not importable and no .whl/ was carried (run ../shared/gpu/wheels.sh here)" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -z "${FMNIST_SOURCE:-}" ] && [ -f .gpu/fmnist-idx.tar.xz ]; then
  mkdir -p /tmp/fmnist-idx && tar xJf .gpu/fmnist-idx.tar.xz -C /tmp/fmnist-idx && export FMNIST_SOURCE=/tmp/fmnist-idx
fi
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=true
exec "$PY" benchmarks/gpu_proof.py "$@"
