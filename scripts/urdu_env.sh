# Sourced by the urdu_*.sh scripts: `source "$(dirname "$0")/urdu_env.sh" NAME "$@"`.
# Sets STORE (arg 1, default /tmp/NAME/urdu.zarr), OUT (arg 2, default /tmp/NAME/urdu-results), EMOBOX,
# URDU_AUDIO and THREADS (from the environment, with the /work/shared defaults), then builds the URDU store.
set -euo pipefail
_urdu_name=$1
STORE=${2:-/tmp/$_urdu_name/urdu.zarr}
OUT=${3:-/tmp/$_urdu_name/urdu-results}
EMOBOX=${EMOBOX:-/work/shared/emobox}
URDU_AUDIO=${URDU_AUDIO:-/work/shared/data/urdu}
THREADS=${THREADS:-1}
EMOBOX=$EMOBOX "$(dirname "${BASH_SOURCE[0]}")/urdu_stores.sh" "$STORE" "$URDU_AUDIO"
