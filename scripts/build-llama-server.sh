#!/usr/bin/env bash
# Build llama.cpp's `llama-server` for the llama.cpp engine and place it at $2.
#
# The source is the llama.cpp that the `llama-cpp-python` sdist vendors (one
# pinned version, fetched with pip from PyPI). Only the server target is built,
# for x86-64 CPUs with AVX2/FMA/F16C (GGML_NATIVE=OFF: builds that detect the
# build machine's CPU died with "Illegal instruction" on machines that advertise
# AVX-512 and AMX), statically linked against ggml and llama so the one file is
# enough. The result is cached in $GALE_BUILD_CACHE (default ~/.cache/gale/build)
# under a name holding the version and the flags, so reinstalling a venv copies
# it in seconds; only a new version or new flags build again (a few minutes on
# 2 cores). Needs cmake and a C++ compiler.
#
# usage: scripts/build-llama-server.sh PIP DEST
set -euo pipefail

PIP=$1
DEST=$2
VERSION=0.3.36
FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
CACHE=${GALE_BUILD_CACHE:-$HOME/.cache/gale/build}
NAME="llama-server-$VERSION-$(printf '%s ' "${FLAGS[@]}" | sha256sum | cut -c1-12)"

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
