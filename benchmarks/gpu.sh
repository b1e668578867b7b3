# Source this on an offline GPU machine (the workplace's device tool), from the project's root:
#   source benchmarks/gpu.sh
# Carried along: .whl/ (../shared/gpu/wheels.sh onnxslim, less polars' runtime wheel) and .gpu/ with polars' runtime
# and the four Fashion-MNIST IDX payloads as .tar.xz: xz -9 brings the carry from 84 MB to 60 MB (its limit: 64 MiB).
# Safe to source: it checks what it needs first, stops at the first failing step with a message, and never leaves
# `set -e` on or exits the calling shell (it returns 1).
_fmnist_gpu_setup() {
    local missing=() f
    [ -f fmnist_yolo/__init__.py ] || missing+=("fmnist_yolo/ (run it from the project's root)")
    compgen -G ".whl/*.whl" >/dev/null || missing+=(".whl/*.whl")
    for f in .gpu/polars-runtime.tar.xz .gpu/fmnist-idx.tar.xz; do [ -f "$f" ] || missing+=("$f"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "benchmarks/gpu.sh: missing ${missing[*]}; a checkout has no .whl/ or .gpu/ (../shared/gpu/wheels.sh" \
             "makes them for the offline GPU machine). Nothing done." >&2
        return 1
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
        tar xJf .gpu/polars-runtime.tar.xz -C /tmp/site &&
        mkdir -p /tmp/raw && tar xJf .gpu/fmnist-idx.tar.xz -C /tmp/raw &&
        export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 &&
        python3 -m fmnist_yolo prepare source=/tmp/raw &&
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader &&
        python3 -c "import torch, ultralytics, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'ultralytics', ultralytics.__version__, 'cuda', torch.cuda.is_available())" ||
        { echo "benchmarks/gpu.sh: the step above failed; the set-up is incomplete" >&2; return 1; }
}
_fmnist_gpu_setup
_fmnist_gpu_rc=$?
unset -f _fmnist_gpu_setup
return $_fmnist_gpu_rc 2>/dev/null || exit $_fmnist_gpu_rc  # `return` when sourced; `exit` only when run as a script
