#!/usr/bin/env bash
# Creates .venv with the package and its dependencies, and makes Fashion-MNIST available.
# Idempotent: a second run only checks. Used by the README's commands and by CI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.radioactive-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch and torchvision pinned together: on this project's machines these wheels lie on disk.
    if [ "$(uname -m)" = "x86_64" ]; then
        .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    else
        .venv/bin/python -m pip install -q "torch==2.9.1" "torchvision==0.24.1"
    fi
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$want" > "$stamp"
fi
# Fashion-MNIST: Debian's package where apt exists, else torchvision's downloader into ./data.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ ! -d data/FashionMNIST/raw ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
         (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || true
    fi
    if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
        .venv/bin/python -c "import torchvision; torchvision.datasets.FashionMNIST('data', train=True, download=True); torchvision.datasets.FashionMNIST('data', train=False, download=True)"
    fi
fi
