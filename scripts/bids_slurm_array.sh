#!/bin/bash
# Run `bbbanomaly bids ... participant` on a cohort as a SLURM job array: one participant per task.
#
#   N=$(ls -d /data/study/sub-* | wc -l)
#   sbatch --array=1-"$N"%20 scripts/bids_slurm_array.sh /data/study /data/study/derivatives
#   # when every task is done (or: sbatch --dependency=afterany:<array job id> ...):
#   bbbanomaly bids /data/study /data/study/derivatives group
#
# Each task writes only its own OUT_DIR/bbbanomaly/sub-<label>/ (complete or absent) and its status
# file; a failed participant makes its task exit 1 and is listed in OUT_DIR/bbbanomaly/failures.tsv
# (`group` lists the failures again). Extra arguments after the two folders go to every task, e.g.
#   sbatch --array=1-40 scripts/bids_slurm_array.sh /data/study /data/study/derivatives \
#       --pipelines dsc,dce --masks /data/study/derivatives/masks --pipeline-config dce=dce.json
#
#SBATCH --job-name=bbbanomaly
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=bbbanomaly_%A_%a.log
set -euo pipefail

BIDS_DIR=${1:?usage: sbatch --array=1-N bids_slurm_array.sh BIDS_DIR OUT_DIR [bids options]}
OUT_DIR=${2:?usage: sbatch --array=1-N bids_slurm_array.sh BIDS_DIR OUT_DIR [bids options]}
shift 2

# The task's participant: the SLURM_ARRAY_TASK_ID-th sub-* folder, sorted (the same order in every task).
PARTICIPANT=$(find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort \
              | sed -n "${SLURM_ARRAY_TASK_ID:?run me with sbatch --array}p")
if [ -z "$PARTICIPANT" ]; then
    echo "array task $SLURM_ARRAY_TASK_ID: no participant (only $(ls -d "$BIDS_DIR"/sub-* | wc -l) sub-* folders)" >&2
    exit 1
fi

# One BLAS/torch thread pool per allocated core.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# BBBANOMALY: the command (default `bbbanomaly`; e.g. "python -m BBBAnomalyLib" or an apptainer exec line).
exec ${BBBANOMALY:-bbbanomaly} bids "$BIDS_DIR" "$OUT_DIR" participant --participant-label "$PARTICIPANT" "$@"
