#!/bin/bash
# Heavy queue (CPU-starved session): full-space key, 30-step marking, resnet_narrow suspects, 3 epochs.
cd "$(dirname "$0")"
L=/tmp/radioactive-heavy.lock
PY=../.venv/bin/python
C=s30
E=3
flock $L bash -c "$PY run.py mark full $C && $PY run.py train resnet_narrow 0.05 0 full $C $E"
flock $L bash -c "$PY run.py train resnet_narrow 0.0 100 full default $E && $PY run.py train resnet_narrow 0.0 0 full default $E"
flock $L $PY evaluate.py --name seed0 --cfg $C --epochs $E --probes 20 --published 20 --controls 10 --refs resnet_narrow:100 --suspects 0.05:0,0.0:0
flock $L $PY run.py train resnet_narrow 0.01 0 full $C $E
flock $L $PY evaluate.py --name seed0 --cfg $C --epochs $E --probes 20 --published 20 --controls 10 --refs resnet_narrow:100 --suspects 0.05:0,0.0:0,0.01:0
for s in 1 2; do
  flock $L $PY run.py train resnet_narrow 0.05 $s full $C $E
  flock $L $PY evaluate.py --name seed$s --cfg $C --epochs $E --probes 20 --published 20 --controls 10 --refs resnet_narrow:100 --suspects 0.05:$s
  flock $L $PY run.py train resnet_narrow 0.0 $s full default $E
  flock $L $PY run.py train resnet_narrow 0.01 $s full $C $E
done
