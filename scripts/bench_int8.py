"""Times dermedge (tract) and onnxruntime on the same member files and the same input tensor.

dermedge runs through `dermedge bench --json --save-input`, which writes the preprocessed input it
timed; onnxruntime then runs that exact tensor. Prints medians in milliseconds and the ratios the
int8 issue asks for.
"""

import argparse
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
        report["input"],
    )


def ort_medians(manifest, tensor, threads, runs):
    folder = os.path.dirname(manifest)
    with open(manifest, "rb") as f:
        members = tomllib.load(f)["members"]
    medians = []
    for member in members:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            os.path.join(folder, member["file"]), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: tensor}
        for _ in range(5):
            session.run(None, feed)
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            session.run(None, feed)
            samples.append((time.perf_counter() - started) * 1e3)
        medians.append(statistics.median(samples))
    return medians


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--f32", required=True)
    parser.add_argument("--int8", required=True)
    parser.add_argument("--dermedge", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}; {args.runs} timed runs per member; input {args.image}")
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "input.f32")
        for threads in args.threads:
            rows = {}
            for precision, manifest in (("f32", args.f32), ("int8", args.int8)):
                members, plain, shape = dermedge_bench(
                    args.dermedge, manifest, args.image, threads, args.runs, saved
                )
                dims = [int(d) for d in shape.split("x")]
                tensor = np.fromfile(saved, dtype="<f4").reshape(dims)
                rows[("dermedge", precision)] = members
                rows[("plain tract", precision)] = plain
                rows[("onnxruntime", precision)] = ort_medians(manifest, tensor, threads, args.runs)
            print(
                f"\n{threads} thread(s): median ms per member; ensemble = sum over members; "
                "dermedge = member run with softmax and copies, plain tract = the bare plan"
            )
            print(f"{'engine':<12} {'precision':<9} {'members':<24} {'ensemble':>9}")
            ensemble = {}
            for (engine, precision), members in rows.items():
                ensemble[(engine, precision)] = sum(members)
                listed = " ".join(f"{m:.2f}" for m in members)
                print(f"{engine:<12} {precision:<9} {listed:<24} {sum(members):>9.2f}")
            d32, d8 = ensemble[("dermedge", "f32")], ensemble[("dermedge", "int8")]
            o32, o8 = ensemble[("onnxruntime", "f32")], ensemble[("onnxruntime", "int8")]
            print(f"dermedge int8 speed-up over dermedge f32:   {d32 / d8:.2f}x (bar >= 2)")
            print(f"dermedge int8 time / onnxruntime int8 time: {d8 / o8:.2f}x (bar <= 2)")
            p8 = ensemble[("plain tract", "int8")]
            print(f"plain tract int8 time / onnxruntime int8:   {p8 / o8:.2f}x")
            print(f"dermedge f32 time / onnxruntime f32 time:   {d32 / o32:.2f}x")
            print(f"onnxruntime int8 speed-up over its f32:     {o32 / o8:.2f}x")


if __name__ == "__main__":
    main()
