# benches/storm_common.sh — what benches/storm.sh and benches/device_storm.sh share: the server's
# memory, sampled while a storm runs. Sourced; device_bundle.sh puts a copy in the bundle.

# The resident memory of a process group in KiB (the server and, for tftpd-hpa, its children);
# from /proc where there is no `ps`.
if command -v ps >/dev/null; then
  group_rss_kib() { ps -o rss= -g "$1" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
else
  group_rss_kib() {
    local pg=$1 total=0 f pid rss
    for f in /proc/[0-9]*/stat; do
      read -r pid _ _ _ pgrp _ <"$f" 2>/dev/null || continue
      [ "$pgrp" = "$pg" ] || continue
      read -r _ rss _ <"/proc/$pid/statm" 2>/dev/null && total=$((total + rss * 4))
    done
    echo "$total"
  }
fi

# rss_sampler_start PGID FLOOR FILE: samples the group's memory once a second in the background,
# keeping the highest (FLOOR at least) in FILE. Once a second: one `ps` over the ~870 processes
# of a 256-client storm takes 30 ms of CPU, and sampling every 50 ms (as these scripts once did)
# took about a fifth of a 2-CPU machine from the storm it measured.
rss_sampler_start() {
  local pg=$1 file=$3
  echo "$2" >"$file"
  (
    while [ -f "$file" ]; do
      r=$(group_rss_kib "$pg") || r=0
      # Written aside and renamed: a sampler stopped mid-write leaves the last peak whole.
      [ "$r" -gt "$(cat "$file" 2>/dev/null || echo 0)" ] && echo "$r" >"$file.new" && mv -f "$file.new" "$file"
      sleep 1
    done
  ) &
  RSS_SAMPLER=$! RSS_FILE=$file
}

# rss_sampler_stop: stops the sampler; its peak is in RSS_PEAK.
rss_sampler_stop() {
  kill "$RSS_SAMPLER" 2>/dev/null || true
  wait "$RSS_SAMPLER" 2>/dev/null || true
  RSS_PEAK=$(cat "$RSS_FILE")
  rm -f "$RSS_FILE" "$RSS_FILE.new"
}
