# benches/storm_common.sh — what benches/storm.sh and benches/device_storm.sh share: the server's
# memory, sampled while a storm runs, the counters a storm starts from, and its table row. Sourced; device_bundle.sh
# puts a copy in the bundle.

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

# storm_row: prints the table row of one server's storm from the caller's variables (n, bytes,
# blk, win, server, ok; start and end in seconds; cpu0 and cpu1, the server's CPU microseconds;
# busy0 and busy1, the machine's busy jiffies at HZ; rss0 and peak in KiB; CG, empty without a
# cgroup), and appends it to $work/rates for storm_medians.awk.
storm_row() {
  awk -v n="$n" -v b="$bytes" -v s="$start" -v e="$end" -v c0="$cpu0" -v c1="$cpu1" \
    -v m0="$busy0" -v m1="$busy1" -v hz="$HZ" -v r0="$rss0" -v pk="$peak" -v cg="$CG" \
    -v set="${n}x$bytes ${blk}x$win" -v srv="$server" -v ok="$ok" 'BEGIN {
      gib = n * b / 1073741824
      cpu = (cg == "" && srv == "hpa") ? "n/a" : sprintf("%.2f", (c1 - c0) / 1e6 / gib)
      printf "| %s | %s | %d/%d | %.1f | %s | %.1f | %.1f |\n", set, srv, ok, n,
        n * b / (e - s) / 1e6, cpu, (m1 - m0) / hz, (pk - r0) / n
    }' | tee -a "$work/rates"
}

# The machine's busy jiffies so far (user, nice, system, irq, softirq), from /proc/stat.
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

# storm_begin PID: once the server has settled, the counters one storm starts from (rss0, cpu0,
# busy0, start) and an empty list of client pids. server_usec is the calling script's (how it
# counts the server's CPU depends on the cgroups it found).
storm_begin() {
  sleep 0.3
  rss0=$(group_rss_kib "$1")
  cpu0=$(server_usec "$1")
  busy0=$(busy_jiffies)
  start=$(date +%s.%N)
  pids=()
}
