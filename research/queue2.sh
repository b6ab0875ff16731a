#!/bin/bash
# Second heavy queue: more probes (50/class fresh and published) and K = 20 on the cached suspects, + 1 %.
cd "$(dirname "$0")"
L=/tmp/radioactive-heavy.lock
PY=../.venv/bin/python
C=s30
E=3
EV="$PY evaluate.py --cfg $C --epochs $E --probes 50 --published 30 --controls 20 --refs resnet_narrow:100"
flock $L bash -c "$PY run.py train resnet_narrow 0.01 0 full $C $E && $EV --name p50k20-seed0 --suspects 0.05:0,0.0:0,0.01:0"
flock $L bash -c "$PY run.py train resnet_narrow 0.05 1 full $C $E && $PY run.py train resnet_narrow 0.0 1 full default $E && $EV --name p50k20-seed1 --suspects 0.05:1,0.0:1"
flock $L bash -c "$PY run.py train resnet_narrow 0.05 2 full $C $E && $PY run.py train resnet_narrow 0.0 2 full default $E && $EV --name p50k20-seed2 --suspects 0.05:2,0.0:2"
