"""Counts the aarch64 instructions a program executes under qemu-user: qemu logs each translated
block's instructions (`-d in_asm`) and each block it runs (`-d exec,nochain`, chaining off so every
run is logged); the log streams through a pipe into this counter, never to disk.

Usage: python3 scripts/count_instructions.py [--cpu MODEL] -- PROGRAM ARGS...
Prints `instructions N`. Timings under qemu mean nothing for a board; instruction counts do."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading

TRACE = re.compile(rb"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
INSN = re.compile(rb"^0x([0-9a-f]+):\s")


def count(log):
    """Executed instructions in a qemu `in_asm,exec` log read from the binary stream `log`."""
    sizes, total = {}, 0
    in_block, block_pc, block_len = False, None, 0
    for line in log:
        if in_block:
            m = INSN.match(line)
            if m:
                if block_pc is None:
                    block_pc = int(m.group(1), 16)
                block_len += 1
            elif not line.strip():
                if block_pc is not None:
                    sizes[block_pc] = block_len
                in_block = False
            continue
        if line.startswith(b"IN:"):
            in_block, block_pc, block_len = True, None, 0
            continue
        m = TRACE.match(line)
        if m:
            total += sizes.get(int(m.group(1), 16), 0)
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", default="max")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "log")
        os.mkfifo(fifo)
        result = {}

        def reader():
            with open(fifo, "rb", buffering=1 << 20) as log:
                result["n"] = count(log)

        thread = threading.Thread(target=reader)
        thread.start()
        run = subprocess.run(
            ["qemu-aarch64-static", "-cpu", args.cpu, "-d", "in_asm,exec,nochain", "-D", fifo]
            + command,
            stdout=subprocess.DEVNULL,
        )
        thread.join()
    if run.returncode != 0:
        sys.exit(f"{command[0]} exited with {run.returncode}")
    print(f"instructions {result['n']}")


if __name__ == "__main__":
    main()
