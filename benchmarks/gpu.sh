# Source this on an offline GPU machine (the workplace's device tool), from the project's root:
#   source benchmarks/gpu.sh
# Carried along: .whl/ (../shared/gpu/wheels.sh onnxslim, less polars' runtime wheel) and .gpu/ with polars' runtime
# and the four Fashion-MNIST IDX payloads as .tar.xz: xz -9 brings the carry from 84 MB to 60 MB (its limit: 64 MiB).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
tar xJf .gpu/polars-runtime.tar.xz -C /tmp/site
mkdir -p /tmp/raw && tar xJf .gpu/fmnist-idx.tar.xz -C /tmp/raw
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 -m fmnist_yolo prepare source=/tmp/raw
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, ultralytics, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'ultralytics', ultralytics.__version__, 'cuda', torch.cuda.is_available())"
set +e
