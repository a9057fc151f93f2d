#!/bin/sh
# The runs behind docs/benchmarks.md, in order. Run from the repository root on a quiet machine
# (check `uptime`: nothing else on the cores). About an hour. Patched trees: see the doc.
set -e
PY=.venv/bin/python

# the floor: the bare relay per layer, raising the frame rate until it saturates
$PY bench/matrix.py floor --layers pubsub,redis,memory --nodes 1 --rates 100,250,500,1000,2000,4000 --label floor
$PY bench/matrix.py floor --layers pubsub,redis --nodes 2 --rates 100,250,500,1000,2000 --label floor

# call cycles: per layer and node count, 10, 25, 50, 100 cycles/s until saturated, each followed
# by the relay at the same event frame rate
$PY bench/matrix.py cycles --layers pubsub,redis,memory --nodes 1,2 --rates 10,25,50,100 --label matrix

# idle: 10k users on one daphne process per layer, and the relay's floor on the same layers
$PY bench/matrix.py idle --layers pubsub,redis,memory --checkpoints 1000,5000,10000 --label idle
for layer in pubsub redis memory; do
  $PY bench/run.py --scenario idle --target relay --layer $layer --checkpoints 1000,5000,10000 --label idle-floor
done

# where the time goes: py-spy on node 1 at the highest sustained rate
$PY bench/run.py --scenario cycle --layer pubsub --nodes 2 --rate 25 --profile --label profile

# the database per cycle, frame by frame
$PY bench/querycount.py --cycles 100
