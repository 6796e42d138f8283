#!/usr/bin/env bash
# Run a command under the Khronos validation layer with synchronisation validation, and fail
# if the layer reports anything at all (errors, warnings, performance warnings, information).
#
#   scripts/vk-validate.sh COMMAND [ARG...]      e.g. scripts/vk-validate.sh .venv/bin/python x.py
#
# Exit status: the command's own if it failed; otherwise 1 if the layer said anything, or if no
# Vulkan instance ran under the layer (nothing was checked); otherwise 0.
# The full log is left in $VKGRAD_VK_LOG_DIR (default build/vk-validation/validation.log).
#
# How the messages are captured (Debian 12's layer is 1.3.239):
# - The layer is switched on by VK_INSTANCE_LAYERS (Kompute is built with
#   KOMPUTE_OPT_DISABLE_VK_DEBUG_LAYERS, so it never enables it itself), synchronisation
#   validation by VK_LAYER_ENABLES and, again, by the settings file.
# - This layer version reads debug_action, report_flags and log_filename only from a
#   vk_layer_settings.txt (found through VK_LAYER_SETTINGS_PATH), not from environment
#   variables. debug_action = LOG_MSG logs every message whether or not the application
#   registered a debug messenger.
# - The layer opens log_filename with fopen(.., "w") once per VkInstance, so a second instance
#   in the same run would truncate the first one's messages. The log "file" is therefore a
#   FIFO, drained into the real log by one reader for the whole run: reopening a FIFO truncates
#   nothing, and child processes write to the same place.
# - report_flags includes info, so every instance writes one status message ("Khronos
#   Validation Layer Active ... Current Enables: ..."). Those are counted (they prove the layer
#   was loaded, with synchronisation validation on) and are the only messages allowed.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${VKGRAD_VK_LOG_DIR:-$ROOT/build/vk-validation}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
log=$dir/validation.log
fifo=$dir/validation.fifo
settings=$dir/vk_layer_settings.txt
rm -f "$log" "$fifo"
mkfifo "$fifo"

sync_enable=VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT
# The layer's shader validation cache lives in the user's cache directory and, on a machine
# where it does not exist yet, every first instance reports UNASSIGNED-cache-file-error. Off,
# so that a run's result does not depend on what earlier runs left behind.
cache_disable=VK_VALIDATION_FEATURE_DISABLE_SHADER_VALIDATION_CACHE_EXT
cat > "$settings" <<EOF
khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG
khronos_validation.report_flags = error,warn,perf,info
khronos_validation.log_filename = $fifo
khronos_validation.enables = $sync_enable
khronos_validation.disables = $cache_disable
EOF

cat "$fifo" > "$log" &
reader=$!
# Hold a writer open for the whole run: the reader sees end-of-file only when this is closed,
# not each time one VkInstance closes its log.
exec {keep}>"$fifo"

rc=0
VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation${VK_INSTANCE_LAYERS:+:$VK_INSTANCE_LAYERS} \
VK_LAYER_ENABLES=$sync_enable \
VK_LAYER_DISABLES=$cache_disable \
VK_LAYER_SETTINGS_PATH=$settings \
    "$@" {keep}>&- || rc=$?

exec {keep}>&-
wait "$reader"
rm -f "$fifo"

# Split the log into messages (a header line "<id>(<SEVERITY> / <TYPE>): msgNum: ..." and the
# lines after it); keep the per-instance status messages apart from everything else.
status_id=UNASSIGNED-khronos-validation-createinstance-status-message
report=$(awk -v status_id="$status_id" '
    /^[^ (]+\([A-Z |\/]+\): msgNum: / { in_status = index($0, status_id "(") == 1 }
    { if (in_status) { if ($0 ~ /Current Enables:.*SYNCHRONIZATION_VALIDATION/) sync++ ;
                       if ($0 ~ "^" status_id "\\(") n++ }
      else print > "/dev/stderr" }
    END { printf "%d %d\n", n, sync }' "$log" 2>"$dir/messages.log")
read -r instances sync_instances <<<"$report"

if [ -s "$dir/messages.log" ]; then
    n=$(grep -c -E '^[^ (]+\([A-Z |/]+\): msgNum: ' "$dir/messages.log" || true)
    echo "vk-validate: FAILED: the validation layer reported $n message(s):" >&2
    head -n 200 "$dir/messages.log" >&2
    [ "$(wc -l < "$dir/messages.log")" -le 200 ] || echo "... (full log: $log)" >&2
    [ "$rc" -ne 0 ] || rc=1
elif [ "$instances" -eq 0 ]; then
    echo "vk-validate: FAILED: no Vulkan instance ran under the validation layer, so nothing" \
         "was checked (is vulkan-validationlayers installed? did the command use Vulkan?)" >&2
    [ "$rc" -ne 0 ] || rc=1
elif [ "$sync_instances" -ne "$instances" ]; then
    echo "vk-validate: FAILED: synchronisation validation was off in" \
         "$((instances - sync_instances)) of $instances Vulkan instance(s); see $log" >&2
    [ "$rc" -ne 0 ] || rc=1
else
    echo "vk-validate: $instances Vulkan instance(s) ran under the validation layer with" \
         "synchronisation validation: no messages"
fi
exit "$rc"
