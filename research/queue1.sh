#!/bin/bash
# Heavy queue (CPU-starved session): full-space key, 30-step marking, resnet_narrow suspects, 3 epochs.
cd "$(dirname "$0")"
L=/tmp/radioactive-heavy.lock
PY=../.venv/bin/python
C=s30
E=3
EV="$PY evaluate.py --cfg $C --epochs $E --probes 10 --published 10 --controls 10 --refs resnet_narrow:100"
flock $L bash -c "$PY run.py mark full $C && $PY run.py train resnet_narrow 0.05 0 full $C $E && \
  $PY run.py train resnet_narrow 0.0 100 full default $E && $PY run.py train resnet_narrow 0.0 0 full default $E && \
  $EV --name seed0 --suspects 0.05:0,0.0:0"
flock $L bash -c "$PY run.py train resnet_narrow 0.01 0 full $C $E && $EV --name seed0b --suspects 0.01:0"
for s in 1 2; do
  flock $L bash -c "$PY run.py train resnet_narrow 0.05 $s full $C $E && $EV --name seed$s --suspects 0.05:$s"
  flock $L bash -c "$PY run.py train resnet_narrow 0.0 $s full default $E && $EV --name seed${s}c --suspects 0.0:$s"
done
