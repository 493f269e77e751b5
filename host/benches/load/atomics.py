#!/usr/bin/env python3
"""Atomic read-modify-write instructions a request executes, from a callgrind
profile taken with --dump-instr=yes (instructions.sh -a takes one per target).

An atomic RMW (x86: a `lock`-prefixed instruction, or `xchg` with memory)
costs ~20 cycles uncontended and orders the core's memory accesses: a few
dozen per request weigh like a few thousand ordinary instructions, which an
instruction count does not show.

    host/benches/load/atomics.py PROFILE N [TOP]

prints the atomic RMWs per request (the profile's count over N requests),
then the TOP (default 15) functions that execute the most. Each object the
profile names (the program, libc, ...) is disassembled with objdump; the
profile's addresses are relative to where each was loaded, as objdump's are.
"""
import collections
import re
import subprocess
import sys

# `lock` prefix, or `xchg` with a memory operand (implicitly locked).
ATOMIC = re.compile(r"\t(lock |xchg\s.*\()")


def atomic_addresses(path):
    """Addresses of the atomic RMW instructions in an object file."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True, check=False
    ).stdout
    found = set()
    for line in out.splitlines():
        if ATOMIC.search(line):
            head = line.split(":", 1)[0].strip()
            try:
                found.add(int(head, 16))
            except ValueError:
                pass
    return found


def position(token, previous):
    """A callgrind position: absolute, relative to the previous, or the same."""
    if token == "*":
        return previous
    if token[0] in "+-":
        return previous + int(token, 0)
    return int(token, 0)


def executions(profile):
    """(object, function, address) -> times executed, from the profile's
    own (not inclusive) costs."""
    names = {"ob": {}, "fn": {}}
    counts = collections.Counter()
    ob = fn = None
    address = line = 0
    after_call = False
    ref = re.compile(r"(c?)(ob|fn)=\((\d+)\)(?: (.*))?")
    with open(profile) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            m = ref.match(raw)
            if m:
                kind, number, name = m.group(2), m.group(3), m.group(4)
                if name:
                    names[kind][number] = name
                if not m.group(1):
                    if kind == "ob":
                        ob = names["ob"].get(number)
                    else:
                        fn = names["fn"].get(number)
                continue
            if raw.startswith("calls="):
                after_call = True
                continue
            if raw[0] in "0123456789+-*":
                parts = raw.split()
                address = position(parts[0], address)
                if len(parts) >= 2:
                    line = position(parts[1], line)
                if after_call:  # the call's inclusive cost, not executions
                    after_call = False
                    continue
                if len(parts) >= 3:
                    counts[(ob, fn, address)] += int(parts[2])
    return counts


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    profile, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) == 4 else 15
    counts = executions(profile)
    atomic = {}
    by_function = collections.Counter()
    total = 0
    for (ob, fn, address), times in counts.items():
        if not ob:
            continue
        if ob not in atomic:
            atomic[ob] = atomic_addresses(ob)
        if address in atomic[ob]:
            total += times
            by_function[f"{fn} [{ob.rsplit('/', 1)[-1]}]"] += times
    print(f"atomic RMW per request: {total / n:.1f}")
    for name, times in by_function.most_common(top):
        print(f"  {times / n:6.2f}  {name[:150]}")


if __name__ == "__main__":
    main()
