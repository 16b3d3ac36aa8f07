#!/usr/bin/env python3
"""Instructions per function per image from two qemu `hotblocks` reports of the same run on 1 and
on 3 images: per block, instructions x executions, summed per symbol of an unstripped aarch64
binary, then (3 images - 1 image) / 2. Usage: instruction_profile.py BINARY ONE THREE [TOP]"""
import bisect
import collections
import re
import subprocess
import sys


def symbols(binary):
    table = []
    listing = subprocess.run(["aarch64-linux-gnu-nm", "-n", "-C", binary],
                             capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        parts = line.split(" ", 2)
        if not line.startswith(" ") and len(parts) == 3 and parts[1] in "tTwW":
            table.append((int(parts[0], 16), re.sub(r"::h[0-9a-f]{16}$", "", parts[2])))
    return table


def per_symbol(table, report):
    starts = [a for a, _ in table]
    blocks = []
    for line in open(report):
        m = re.match(r"0x([0-9a-f]+), (\d+), (\d+), (\d+)", line)
        if m:
            blocks.append((int(m.group(1), 16), int(m.group(3)) * int(m.group(4))))
    # qemu loads a position-independent binary at one of these bases.
    inside = collections.Counter()
    for pc, n in blocks:
        for base in (0, 0x5500000000, 0x4000000000, 0x555555554000):
            if starts[0] <= pc - base <= starts[-1]:
                inside[base] += n
    base = inside.most_common(1)[0][0] if inside else 0
    totals = collections.Counter()
    for pc, n in blocks:
        address = pc - base
        if starts[0] <= address <= starts[-1] + 0x10000:
            totals[table[bisect.bisect_right(starts, address) - 1][1]] += n
        else:
            totals["<outside the binary: loader, libc>"] += n
    return totals


def main():
    binary, one, three = sys.argv[1:4]
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    table = symbols(binary)
    a, b = per_symbol(table, one), per_symbol(table, three)
    per_image = {name: (b[name] - a[name]) / 2 for name in set(a) | set(b)}
    print(f"{sum(per_image.values()) / 1e6:.1f} M instructions per image")
    for name, n in sorted(per_image.items(), key=lambda x: -x[1])[:top]:
        print(f"{n / 1e6:9.2f} M  {name[:160]}")


main()
