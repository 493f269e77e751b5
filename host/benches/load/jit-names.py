#!/usr/bin/env python3
"""Names the plugins' functions in callgrind_annotate output.

callgrind shows JIT-compiled Wasm as `???:0xADDRESS`. Run the gateway with
WASMGATE_PERF_MAP=1 (wasmtime then writes /tmp/perf-PID.map) and plugins
built unstripped (CARGO_PROFILE_PLUGIN_STRIP=false), then:

    callgrind_annotate --inclusive=yes --auto=no OUT > incl.txt
    host/benches/load/jit-names.py /tmp/perf-PID.map incl.txt

prints incl.txt with each address replaced by the function it falls in.
"""
import bisect
import re
import sys


def load(map_path):
    spans = []
    with open(map_path) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3:
                spans.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
    spans.sort()
    return spans, [s[0] for s in spans]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    spans, starts = load(sys.argv[1])

    def name(match):
        addr = int(match.group(1), 16)
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and spans[i][0] <= addr < spans[i][0] + spans[i][1]:
            return spans[i][2]
        return match.group(0)

    with open(sys.argv[2]) as f:
        for line in f:
            print(re.sub(r"\?\?\?:0x([0-9a-f]+)", name, line.rstrip("\n")))


if __name__ == "__main__":
    main()
