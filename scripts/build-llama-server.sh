#!/usr/bin/env bash
# Build llama.cpp's `llama-server` for the llama.cpp engine and place it at $2.
#
# The source is the llama.cpp that the `llama-cpp-python` sdist vendors (one
# pinned version, fetched with pip from PyPI). Only the server target is built,
# statically linked against ggml and llama so the one file is enough, for the CPU
# of the machine that builds it, chosen from /proc/cpuinfo rather than by the
# compiler's native detection (builds with GGML_NATIVE died with "Illegal
# instruction" on machines that advertise AVX-512 and AMX):
#
# - amx: AVX-512 (VNNI, VBMI, BF16) and AMX-INT8/BF16, when the CPU has them all.
#   llama.cpp multiplies quantized weights (Q4_0, Q4_1, Q8_0, ...) on AMX tiles:
#   measured on a 2-core Sapphire Rapids, about twice the tokens/s of the AVX2 build
#   at every concurrency (docs/cpu-servers.md). The patches in scripts/llama-patches
#   fix what kept it from running: the tile configuration was built on the stack,
#   where the compiler dropped it, and the first tile instruction died with SIGILL
#   (llama.cpp pull request 26954 fixes the same).
# - avx2: AVX2/FMA/F16C/BMI2, any x86-64 CPU of the last ten years.
#
# GALE_LLAMA_CPU=avx2|amx overrides the choice (a worker node without AMX needs the
# avx2 build). The result is cached in $GALE_BUILD_CACHE (default
# ~/.cache/gale/build) under a name holding the version, the flags and the patches,
# so reinstalling a venv copies it in seconds; only a new version, flags or patch
# build again (a few minutes on 2 cores). Needs cmake and a C++ compiler.
#
# usage: scripts/build-llama-server.sh PIP DEST
set -euo pipefail

PIP=$1
DEST=$2
VERSION=0.3.36
HERE=$(cd "$(dirname "$0")" && pwd)
AVX2=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
AMX=("${AVX2[@]}" -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON
    -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON)
AMX_NEEDS=(avx512f avx512bw avx512vl avx512dq avx512_vnni avx512vbmi avx512_bf16
    amx_tile amx_int8 amx_bf16)

cpu_variant() {
    local flags
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    for needed in "${AMX_NEEDS[@]}"; do
        [[ $flags == *" $needed "* ]] || { echo avx2; return; }
    done
    echo amx
}

VARIANT=${GALE_LLAMA_CPU:-$(cpu_variant)}
case $VARIANT in
    amx) FLAGS=("${AMX[@]}") ;;
    avx2) FLAGS=("${AVX2[@]}") ;;
    *) echo "GALE_LLAMA_CPU is '$VARIANT'; use avx2 or amx" >&2; exit 2 ;;
esac
PATCHES=("$HERE"/llama-patches/*.patch)
CACHE=${GALE_BUILD_CACHE:-$HOME/.cache/gale/build}
STAMP=$( (printf '%s ' "${FLAGS[@]}"; cat "${PATCHES[@]}") | sha256sum | cut -c1-12)
NAME="llama-server-$VERSION-$VARIANT-$STAMP"

if [[ ! -x "$CACHE/$NAME" ]]; then
    for tool in cmake c++; do
        command -v "$tool" >/dev/null || {
            echo "building llama-server needs $tool (e.g. apt-get install cmake g++)" >&2
            exit 1
        }
    done
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PIP" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
    tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work" \
        "llama_cpp_python-$VERSION/vendor/llama.cpp"
    src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
    for patch in "${PATCHES[@]}"; do
        patch -s -p1 -d "$src" <"$patch"
    done
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
        "${FLAGS[@]}" -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF >"$work/cmake.log" || {
        tail -20 "$work/cmake.log" >&2
        exit 1
    }
    cmake --build "$work/build" --target llama-server -j "${GALE_BUILD_JOBS:-$(nproc)}" \
        >"$work/build.log" || {
        tail -20 "$work/build.log" >&2
        exit 1
    }
    mkdir -p "$CACHE"
    cp "$work/build/bin/llama-server" "$CACHE/$NAME.tmp"
    mv "$CACHE/$NAME.tmp" "$CACHE/$NAME"
fi
install -m 755 "$CACHE/$NAME" "$DEST"
echo "llama-server: $VARIANT build ($NAME)"
