#!/bin/sh
# Usage (from the repository root): sh docker/cuda-toolkit.sh PIP CUDA_HOME
# Does nothing when CUDA_HOME already has nvcc (nvidia/cuda:*-devel bases). Otherwise installs
# docker/requirements-cuda-toolkit.txt (NVIDIA's wheels, which all unpack into nvidia/cu13/) and moves
# that tree to CUDA_HOME with the links a CUDA install has and torch's cpp_extension expects:
# lib64 -> lib, targets/x86_64-linux/{include,lib}, and libcudart.so.
set -eu
pip=$1
cuda_home=$2
if [ -x "$cuda_home/bin/nvcc" ]; then
    echo "cuda-toolkit.sh: $cuda_home/bin/nvcc is there (the base's toolkit), nothing to install"
    exit 0
fi
wheels=$(mktemp -d)
"$pip" install -q --no-deps --target "$wheels" -r docker/requirements-cuda-toolkit.txt
mkdir -p "$(dirname "$cuda_home")"
mv "$wheels/nvidia/cu13" "$cuda_home"
rm -rf "$wheels"
cd "$cuda_home"
ln -s lib lib64
ln -s libcudart.so.13 lib/libcudart.so
mkdir -p targets/x86_64-linux
ln -s ../../include targets/x86_64-linux/include
ln -s ../../lib targets/x86_64-linux/lib
"$cuda_home/bin/nvcc" --version | tail -1
