#!/bin/bash
# First heavy queue: full-space key, default marking, resnet_narrow suspects, 5 epochs.
cd "$(dirname "$0")"
L=/tmp/radioactive-heavy.lock
PY=../.venv/bin/python
while [ ! -f ../markers/fmnist-cnn.safetensors ]; do sleep 10; done
sleep 5
flock $L $PY run.py mark full default
flock $L $PY run.py train resnet_narrow 0.05 0
flock $L $PY run.py train resnet_narrow 0.0 100
flock $L $PY run.py train resnet_narrow 0.0 0
flock $L $PY run.py train resnet_narrow 0.01 0
flock $L $PY evaluate.py --name seed0 --probes 50 --published 30 --controls 20 --refs resnet_narrow:100 --suspects 0.05:0,0.0:0,0.01:0
for s in 1 2; do
  flock $L $PY run.py train resnet_narrow 0.05 $s
  flock $L $PY run.py train resnet_narrow 0.0 $s
  flock $L $PY run.py train resnet_narrow 0.01 $s
done
flock $L $PY run.py train cnn 0.0 100
