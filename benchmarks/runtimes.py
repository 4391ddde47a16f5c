"""The agent's cpu-int8 runtime on the smart-park detector: latency and throughput against fp32, same frames.

The shipped detector is lowered to the integer IR with data calibration on rendered frames and int8 codes up to
+-64 (``int8_max_code=64``: every layer on ONNX Runtime's U8S8 kernels, which cannot saturate even on AVX2 CPUs
without VNNI), packaged, verified and loaded by ``edge_agent.runtimes`` as the agent does, and self-tested against
the numpy reference.
Baselines, measured in the same process on the same frames and interleaved round by round: the fp32 detector
exported with ``torch.onnx.export`` and run by ONNX Runtime with the same thread count and optimizations, and
the fp32 detector in torch (``inference_mode``). Batch 1 is the latency a camera sees; batch 4 the throughput
of a box serving several cameras. Rates are frames per second (higher is better).
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import TIMES, Comparison, Options, Result, Table, Workload, compare, measure_rates

# What issue 6 asks of the cpu-int8 runtime on the detector.
TARGETS = {"int8_over_fp32_ort": 2.0, "int8_over_fp32_torch": 5.0}
INPUT_SHAPE = (1, 3, 240, 320)
CALIBRATION_SEED = 8_000_000  # rendered training-distribution scenes, disjoint from the seeds below
FRAME_SEED = 8_100_000
THREAD_COUNTS = (1, 2)
BATCH_SIZES = (1, 4)
# The CPU features that decide which integer GEMM kernel ONNX Runtime's MLAS picks: with VNNI one vpdpbusd does
# 4 uint8 x int8 MACs per 32-bit lane (4x the MACs of an fp32 FMA); AVX2 alone needs vpmaddubsw + vpmaddwd + vpaddd.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
PROFILE_RUNS = 50
PROFILE_TOP = 5


def _rendered(seed: int, count: int) -> np.ndarray:
    from smartpark.scenes import render_training_sample

    return np.stack([render_training_sample(seed + i).image for i in range(count)])


def _integer_package(model, calibration_frames: np.ndarray, selftest_frames: np.ndarray):
    """The detector lowered and packaged as the registry does, read back verified."""
    from compression.calibration import calibrate
    from compression.lowering import lower
    from compression.onnx_export import export_onnx
    from model_store import reference
    from model_store.crypto import SigningKey
    from model_store.package import build_package, read_package
    from model_store.serialization import to_bytes
    from smartpark.detector import preprocess

    ranges = calibrate(model, [preprocess(calibration_frames[i : i + 4]) for i in range(0, len(calibration_frames), 4)])
    integer_model = lower(model, INPUT_SHAPE, ranges, int8_max_code=64)
    (input_name,) = integer_model.inputs
    batch = np.ascontiguousarray(selftest_frames.transpose(0, 3, 1, 2))
    key = SigningKey.generate()
    data = build_package(
        name="smartpark-detector",
        version=1,
        task="detection",
        labels=["vehicle", "person"],
        input_spec={"shape": list(INPUT_SHAPE), "dtype": "uint8", "layout": "NCHW", "scale": 1 / 255},
        ir_bytes=to_bytes(integer_model),
        onnx_bytes=export_onnx(integer_model),
        selftest={input_name: batch, **reference.run(integer_model, batch)},
        compression={"codebook": "int8", "int8_max_code": 64},
        runtimes=["cpu-int8", "reference"],
        min_agent_version="0.1.0",
        signing_key=key,
    )
    return read_package(data, {key.key_id: key.public_key})


def _fp32_ort_session(onnx_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _cpu_features() -> dict:
    """The CPU's family/model and the SIMD flags that matter for int8 vs fp32 (Linux /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "flags": {flag: flag in flags for flag in ISA_FLAGS},
    }


def _op_profile(onnx_bytes: bytes, batch: np.ndarray, runs: int) -> dict:
    """ONNX Runtime's per-node kernel times, 1 thread, all optimizations: median per node over `runs` calls.

    Returns the per-op-type sums (ms, largest first), the slowest nodes and the node count per op type.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="runtimes-profile-") as workdir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(workdir, "profile")
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: batch}
        for _ in range(runs + 3):
            session.run(None, feed)
        with open(session.end_profiling()) as file:
            events = json.load(file)
    durations: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            durations.setdefault(node, []).append(event["dur"] / 1000)
            op_types[node] = event.get("args", {}).get("op_name", "?")
    per_node = {node: float(np.median(times[-runs:])) for node, times in durations.items()}
    per_op: dict[str, float] = {}
    counts: dict[str, int] = {}
    for node, ms in per_node.items():
        per_op[op_types[node]] = per_op.get(op_types[node], 0.0) + ms
        counts[op_types[node]] = counts.get(op_types[node], 0) + 1
    slowest = sorted(per_node.items(), key=lambda item: -item[1])[:PROFILE_TOP]
    return {
        "total_ms": sum(per_node.values()),
        "ms_per_op": dict(sorted(per_op.items(), key=lambda item: -item[1])),
        "nodes_per_op": counts,
        "slowest_nodes": [{"node": node, "op": op_types[node], "ms": ms} for node, ms in slowest],
    }


def _batches(frames: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [frames[i : i + batch_size] for i in range(0, len(frames) - batch_size + 1, batch_size)]


def run(options: Options) -> Result:
    import torch

    from edge_agent.runtimes import create_runtime, nchw_batch
    from edge_agent.runtimes.selftest import run_selftest
    from smartpark.detector import export_fp32_onnx, load_detector, preprocess

    frame_count, rounds = (4, 3) if options.quick else (16, 7)
    model = load_detector().eval()
    frames = _rendered(FRAME_SEED, frame_count)
    package = _integer_package(model, _rendered(CALIBRATION_SEED, 4 if options.quick else 16), frames[:4])
    fp32_onnx = export_fp32_onnx(model, INPUT_SHAPE)

    tables, notes = [], []
    details = {"frames": frame_count, "rounds": rounds, "runs": [], "load_average": os.getloadavg()[0]}
    ort_rows, torch_rows = [], []
    for threads in THREAD_COUNTS:
        torch.set_num_threads(threads)
        runtime = create_runtime("cpu-int8", threads=threads)
        runtime.load(package)
        selftest = run_selftest(runtime, package)
        session = _fp32_ort_session(fp32_onnx, threads)
        for batch_size in BATCH_SIZES:
            int8_batches = [nchw_batch(batch) for batch in _batches(frames, batch_size)]
            float_batches = [preprocess(batch) for batch in _batches(frames, batch_size)]
            count = batch_size * len(int8_batches)

            def int8(batches=int8_batches, count=count, runtime=runtime):
                for batch in batches:
                    runtime.infer(batch)
                return count

            def fp32_ort(batches=float_batches, count=count, session=session):
                for batch in batches:
                    session.run(None, {"image": batch.numpy()})
                return count

            def fp32_torch(batches=float_batches, count=count):
                with torch.inference_mode():
                    for batch in batches:
                        model(batch)
                return count

            for work in (int8, fp32_ort, fp32_torch):  # warm-up: first-call allocations and thread pools
                work()
            rates = measure_rates(
                [Workload("int8", int8), Workload("fp32_ort", fp32_ort), Workload("fp32_torch", fp32_torch)],
                rounds,
            )
            case = f"batch {batch_size}, {threads} thread{'s' if threads > 1 else ''}"
            for rows, baseline in ((ort_rows, "fp32_ort"), (torch_rows, "fp32_torch")):
                row = compare(case, rates, "int8", baseline)
                row.unit = "frames/s"
                rows.append(row)
            details["runs"].append(
                {
                    "threads": threads,
                    "batch": batch_size,
                    "ms_per_frame": {name: 1000 / float(np.median(rate)) for name, rate in rates.items()},
                }
            )
        info = runtime.info()
        details["runs"][-1]["cpu_int8_info"] = info
        details.setdefault("selftest", {})[threads] = {
            "passed": selftest.passed,
            "max_abs_lsb_diff": selftest.max_abs_lsb_diff,
            "reason": selftest.reason,
        }
        runtime.close()

    profile_runs = PROFILE_RUNS // 5 if options.quick else PROFILE_RUNS
    details["profile"] = {
        "batch": 1,
        "threads": 1,
        "runs": profile_runs,
        "int8": _op_profile(package.onnx_bytes, nchw_batch(frames[:1]), profile_runs),
        "fp32_ort": _op_profile(fp32_onnx, preprocess(frames[:1]).numpy(), profile_runs),
    }
    details["cpu"] = _cpu_features()

    tables.append(
        Table("cpu-int8 (ONNX Runtime, int8 QDQ)", "fp32 ONNX Runtime", ort_rows, title="int8 vs fp32 ONNX Runtime")
    )
    tables.append(Table("cpu-int8 (ONNX Runtime, int8 QDQ)", "fp32 torch", torch_rows, title="int8 vs fp32 torch"))
    kernels = details["runs"][-1]["cpu_int8_info"]["kernels"]
    notes.append(
        "Kernels that ran for the int8 model (ONNX Runtime profile, op and node count): "
        + ", ".join(f"{op} {count}" for op, count in kernels.items())
    )
    notes += _latency_notes(details["runs"])
    notes += _profile_notes(details["profile"], details["cpu"])
    notes.append(
        f"Load average when the run started: {details['load_average']:.2f} on {os.cpu_count()} cores; with other "
        "work on the machine the 2-thread rows measure contention more than the engines."
    )
    notes += _target_notes(ort_rows, torch_rows)
    for threads, result in details["selftest"].items():
        notes.append(
            f"Self-test on 4 rendered frames ({threads} thread{'s' if threads > 1 else ''}): "
            f"{'passed' if result['passed'] else 'FAILED: ' + result['reason']}; largest difference from the "
            f"numpy reference per output, in LSB: {result['max_abs_lsb_diff']}."
        )
    notes.append("Reproduce with `.venv/bin/python -m benchmarks runtimes` (part of `make bench`).")
    details["targets"] = TARGETS
    return Result(
        title="runtimes: cpu-int8 detector latency vs fp32",
        description=__doc__.split("\n\n", 1)[1],
        tables=tables,
        notes=notes,
        details=details,
    )


def _latency_notes(runs: list[dict]) -> list[str]:
    lines = []
    for run in runs:
        if run["batch"] == 1:
            ms = run["ms_per_frame"]
            lines.append(
                f"Batch 1, {run['threads']} thread(s), median ms per frame: cpu-int8 {ms['int8']:.1f}, "
                f"fp32 ONNX Runtime {ms['fp32_ort']:.1f}, fp32 torch {ms['fp32_torch']:.1f}."
            )
    return lines


def _profile_notes(profile: dict, cpu: dict) -> list[str]:
    """Where the time goes, per op type and slowest nodes, int8 beside fp32, and what the CPU offers int8."""

    def summary(result: dict) -> str:
        total = result["total_ms"]
        ops = ", ".join(
            f"{op} x{result['nodes_per_op'][op]} {ms:.2f} ms ({100 * ms / total:.0f} %)"
            for op, ms in result["ms_per_op"].items()
            if ms >= 0.005 * total
        )
        slowest = ", ".join(f"{node['node']} ({node['op']}) {node['ms']:.3f} ms" for node in result["slowest_nodes"])
        return f"{total:.2f} ms in kernels: {ops}; slowest nodes: {slowest}"

    lines = [
        f"Where the time goes (ONNX Runtime profiler, batch 1, 1 thread, median per node over {profile['runs']} "
        f"calls, summed per op). cpu-int8: {summary(profile['int8'])}.",
        f"fp32 ONNX Runtime: {summary(profile['fp32_ort'])}.",
    ]
    int8_ops, fp32_ops = profile["int8"]["ms_per_op"], profile["fp32_ort"]["ms_per_op"]
    conv_int8, conv_fp32 = int8_ops.get("QLinearConv", 0.0), fp32_ops.get("Conv", 0.0) + fp32_ops.get("FusedConv", 0.0)
    rest_int8 = profile["int8"]["total_ms"] - conv_int8
    if conv_int8 and conv_fp32:
        lines.append(
            f"Convolutions alone: fp32 {conv_fp32:.2f} ms / int8 {conv_int8:.2f} ms = "
            f"{conv_fp32 / conv_int8:.2f}{TIMES}; "
            f"the int8 graph's other kernels (uint8 Resize, QLinearAdd, layout Transposes, input Pad, output "
            f"DequantizeLinear) add {rest_int8:.2f} ms, {100 * rest_int8 / profile['int8']['total_ms']:.0f} % of its "
            "kernel time. The 3-channel stem conv reads the image through a Pad to 4 channels (zero weights, same "
            "results): in a one-conv model on an AVX-512 VNNI EPYC, 1 thread, QLinearConv took 0.41 ms on 3 channels, "
            "0.25 ms on 4."
        )
    flags = cpu.get("flags", {})
    if flags:
        present = [flag for flag, has in flags.items() if has]
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni")
        lines.append(
            f"CPU: {cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model')}, flags "
            f"{', '.join(present) or 'none of ' + ', '.join(ISA_FLAGS)}. "
            + (
                "With VNNI, MLAS runs the U8S8 convolutions on vpdpbusd (4 MACs per 32-bit lane per instruction, "
                "4x the fp32 FMA), so int8 can reach 2x over fp32 ONNX Runtime once the convolutions dominate."
                if vnni
                else "Without VNNI the U8S8 kernel needs vpmaddubsw + vpmaddwd + vpaddd for what one fp32 FMA "
                "does for 8 MACs: about 32 MACs per 3 instructions against 8 per FMA, a 1.3x-2x ceiling on "
                "int8 over fp32 in the convolutions, which is why 2x over fp32 ONNX Runtime is out of reach on an "
                "AVX2-only CPU."
            )
        )
    return lines


def _target_notes(ort_rows: list[Comparison], torch_rows: list[Comparison]) -> list[str]:
    def verdict(rows: list[Comparison], target: float, baseline: str) -> str:
        worst = min(rows, key=lambda row: row.ratio)
        met = "met" if worst.ratio >= target else "NOT met"
        return (
            f"Target >= {target:g}{TIMES} faster than {baseline}: {met} "
            f"(lowest {worst.ratio:.2f}{TIMES} at {worst.case}; highest {max(r.ratio for r in rows):.2f}{TIMES})."
        )

    lines = [
        verdict(ort_rows, TARGETS["int8_over_fp32_ort"], "fp32 ONNX Runtime"),
        verdict(torch_rows, TARGETS["int8_over_fp32_torch"], "fp32 torch"),
    ]
    # int8 / torch = (int8 / fp32 ORT) x (fp32 ORT / torch): the second factor is the fp32 engines' own gap.
    for ort_row, torch_row in zip(ort_rows, torch_rows, strict=True):
        if ort_row.case == "batch 1, 1 thread":
            gap = ort_row.baseline / torch_row.baseline
            lines.append(
                f"At batch 1, 1 thread, int8 over fp32 torch ({torch_row.ratio:.2f}{TIMES}) is int8 over fp32 ONNX "
                f"Runtime ({ort_row.ratio:.2f}{TIMES}) times fp32 ONNX Runtime over fp32 torch ({gap:.2f}{TIMES}): "
                f"5{TIMES} over torch would need {TARGETS['int8_over_fp32_torch'] / gap:.2f}{TIMES} over fp32 ONNX "
                "Runtime in the same run."
            )
    return lines
