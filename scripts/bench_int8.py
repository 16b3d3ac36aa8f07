"""Times dermedge (tract) and onnxruntime on the same member files and the same input tensor.

dermedge runs through `dermedge bench --json --save-input`, which writes the preprocessed input it
timed (one file per distinct member input); onnxruntime then runs each member on that exact tensor. Prints medians in milliseconds and the ratios the
int8 issue asks for. An ensemble figure is the median wall time of running every member on the
input: dermedge's `members_and_combine` (members share the thread pool at 2+ threads), and for
onnxruntime the faster of its members one after another with all threads, and its members at once
on threads of their own (sessions of threads // members intra-op threads each).

The runs are made in rounds, f32 and int8 taking turns (f32 first in even rounds, int8 first in
odd ones), each round in fresh processes and sessions; every figure is the median of the rounds'
medians, so that a drift of the machine's speed over minutes falls on both precisions alike.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import tempfile
import time
import tomllib

import numpy as np
import onnxruntime as ort


def dermedge_bench(binary, manifest, image, threads, runs, save_input):
    out = subprocess.run(
        [binary, "--ensemble", manifest, "--threads", str(threads), "bench", "--json",
         "--runs", str(runs), "--warmup", "5", "--image", image, "--save-input", save_input],
        check=True, capture_output=True, text=True,
    ).stdout
    report = json.loads(out)
    members = report["members"]
    return (
        [m["dermedge"]["median_ms"] for m in members],
        [m["tract_alone"]["median_ms"] for m in members],
        report["members_and_combine"]["median_ms"],
        [saved_tensor(m) for m in members],
    )


def saved_tensor(member):
    """The input `dermedge bench --save-input` wrote for a member, shaped as its report says."""
    dims = [int(d) for d in member["input"].split("x")]
    return np.fromfile(member["saved_input"], dtype="<f4").reshape(dims)


def ort_sessions(manifest, threads):
    folder = os.path.dirname(manifest)
    with open(manifest, "rb") as f:
        members = tomllib.load(f)["members"]
    sessions = []
    for member in members:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        sessions.append(ort.InferenceSession(
            os.path.join(folder, member["file"]), options, providers=["CPUExecutionProvider"]
        ))
    return sessions


def ort_timings(manifest, tensors, threads, runs):
    """Per-member medians, and the ensemble median: sequential, or at once when that is faster."""
    sessions = ort_sessions(manifest, threads)
    feeds = [{s.get_inputs()[0].name: t} for s, t in zip(sessions, tensors)]
    per_member = [[] for _ in sessions]
    totals = []
    for run in range(5 + runs):
        total = 0.0
        for i, (session, feed) in enumerate(zip(sessions, feeds)):
            started = time.perf_counter()
            session.run(None, feed)
            ms = (time.perf_counter() - started) * 1e3
            total += ms
            if run >= 5:
                per_member[i].append(ms)
        if run >= 5:
            totals.append(total)
    ensemble = statistics.median(totals)
    at_once = None
    if threads > 1 and len(sessions) > 1:
        sessions = ort_sessions(manifest, max(1, threads // len(sessions)))
        pairs = list(zip(sessions, feeds))
        with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
            walls = []
            for run in range(5 + runs):
                started = time.perf_counter()
                list(pool.map(lambda p: p[0].run(None, p[1]), pairs))
                if run >= 5:
                    walls.append((time.perf_counter() - started) * 1e3)
        at_once = statistics.median(walls)
        ensemble = min(ensemble, at_once)
    return [statistics.median(m) for m in per_member], ensemble, at_once


def time_in_rounds(args, threads, saved):
    """Per engine and precision, each round's member medians and ensemble median; and per
    precision, onnxruntime's members-at-once medians."""
    per_round = max(1, args.runs // args.rounds)
    member_rounds, ensemble_rounds, note_rounds = {}, {}, {}
    for round_index in range(args.rounds):
        order = [("f32", args.f32), ("int8", args.int8)]
        if round_index % 2:
            order.reverse()
        for precision, manifest in order:
            members, plain, whole, tensors = dermedge_bench(
                args.dermedge, manifest, args.image, threads, per_round, saved
            )
            ort_members, ort_ensemble, at_once = ort_timings(manifest, tensors, threads, per_round)
            for key, row, whole_ms in (
                (("dermedge", precision), members, whole),
                (("plain tract", precision), plain, sum(plain)),
                (("onnxruntime", precision), ort_members, ort_ensemble),
            ):
                member_rounds.setdefault(key, []).append(row)
                ensemble_rounds.setdefault(key, []).append(whole_ms)
            if at_once is not None:
                note_rounds.setdefault(precision, []).append(at_once)
    return member_rounds, ensemble_rounds, note_rounds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--f32", required=True)
    parser.add_argument("--int8", required=True)
    parser.add_argument("--dermedge", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rounds", type=int, default=5,
        help="rounds of RUNS / ROUNDS timed runs; f32 and int8 alternate round by round",
    )
    args = parser.parse_args()
    print(
        f"onnxruntime {ort.__version__}; {args.runs} timed runs per member in {args.rounds} "
        f"rounds (each figure: the median of the rounds' medians); input {args.image}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "input.f32")
        for threads in args.threads:
            member_rounds, ensemble_rounds, note_rounds = time_in_rounds(args, threads, saved)
            keys = [(e, p) for e in ("dermedge", "plain tract", "onnxruntime") for p in ("f32", "int8")]
            rows = {k: [statistics.median(r) for r in zip(*member_rounds[k])] for k in keys}
            ensemble = {k: statistics.median(ensemble_rounds[k]) for k in keys}
            notes = [
                f"onnxruntime {p}: members at once {statistics.median(v):.2f} ms"
                for p, v in note_rounds.items()
            ]
            notes += [
                f"dermedge {p} ensemble, round by round: "
                + " ".join(f"{ms:.2f}" for ms in ensemble_rounds[("dermedge", p)])
                for p in ("f32", "int8")
            ]
            print(
                f"\n{threads} thread(s): median ms per member (each alone) and for the ensemble "
                "(all members on one input); dermedge = members with softmax and combine, "
                "plain tract = the bare plans one after another"
            )
            print(f"{'engine':<12} {'precision':<9} {'members':<24} {'ensemble':>9}")
            for (engine, precision), members in rows.items():
                listed = " ".join(f"{m:.2f}" for m in members)
                print(f"{engine:<12} {precision:<9} {listed:<24} {ensemble[(engine, precision)]:>9.2f}")
            for note in notes:
                print(note)
            d32, d8 = ensemble[("dermedge", "f32")], ensemble[("dermedge", "int8")]
            o32, o8 = ensemble[("onnxruntime", "f32")], ensemble[("onnxruntime", "int8")]
            print(f"dermedge int8 speed-up over dermedge f32:   {d32 / d8:.2f}x (bar >= 3)")
            print(f"dermedge int8 time / onnxruntime int8 time: {d8 / o8:.2f}x (bar <= 1)")
            p8 = ensemble[("plain tract", "int8")]
            print(f"plain tract int8 time / onnxruntime int8:   {p8 / o8:.2f}x")
            print(f"dermedge f32 time / onnxruntime f32 time:   {d32 / o32:.2f}x")
            print(f"onnxruntime int8 speed-up over its f32:     {o32 / o8:.2f}x")


if __name__ == "__main__":
    main()
