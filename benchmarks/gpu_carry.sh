#!/usr/bin/env bash
# Packs what an offline GPU machine needs for benchmarks/gpu_proof.sh, within the device tool's 64 MiB carry:
#   .whl/  the wheels of ../shared/gpu/wheels.sh (Ultralytics and its small dependencies), less polars: training
#          reads results.csv with pandas where polars is missing (compat.results_without_polars), which spares
#          31 MB of carry, and the proof trains with plots=False (Ultralytics plots with polars)
#   .gpu/  fmnist-idx.tar.xz: the four IDX payloads, decompressed then xz -9 (26.5 MB against 30.9 MB of .gz), from
#          the source `fmnist-yolo prepare` uses
#   .gpu/resume/  copy here the last.pt, results.csv and fmnist_yolo.json a previous call brought back
# Run from the project's root; then carry .whl and .gpu (device tool: carry=[".whl", ".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
ex=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu/' "$ex" 2>/dev/null || echo '/.gpu/' >> "$ex"
bash ../shared/gpu/wheels.sh >/dev/null
mkdir -p .gpu
rm -f .whl/polars*.whl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/idx"
.venv/bin/python - "$tmp/idx" <<'PY'
import gzip, sys
from pathlib import Path
from fmnist_yolo.data.sources import resolve_source
for f in resolve_source(download=False).files.values():  # the source prepare would use, its payloads
    data = f.read_bytes()
    Path(sys.argv[1], f.name.removesuffix(".gz")).write_bytes(gzip.decompress(data) if f.suffix == ".gz" else data)
PY
tar cf - -C "$tmp/idx" . | xz -9 -T2 > .gpu/fmnist-idx.tar.xz
du -sh .whl .gpu; du -cb .whl .gpu | tail -1 | awk '{printf "carry: %.1f MiB of 64\n", $1 / 1048576}'
