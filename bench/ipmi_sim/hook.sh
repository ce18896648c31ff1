#!/bin/sh
# chassis_control hook of the bench and drill ipmi_sim BMCs: power and boot device in
# state files under $1 (same protocol as bmc/tests/support). Called as: DIR MC get|set ...
dir=$1; mc=$2; op=$3; shift 3
[ -f "$dir/power" ] || echo 1 > "$dir/power"
case "$op" in
  get) for p in "$@"; do case "$p" in
         power) echo "power:$(cat "$dir/power")" ;;
         boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
         *) exit 1 ;; esac; done ;;
  set) while [ $# -gt 0 ]; do p=$1; v=$2; shift 2; case "$p" in
         power) echo "$v" > "$dir/power" ;;
         boot) echo "$v" > "$dir/boot" ;;
         shutdown) echo 0 > "$dir/power" ;;
         identify) shift ;;
         *) ;; esac; done ;;
  *) exit 1 ;;
esac
exit 0
