"""Running a compression job in a Celery worker: claim it, compress with live progress, package the result.

The job row is the only channel between the worker and everyone else: the worker writes progress, a
heartbeat and the loss curve into it (throttled), and reads ``cancel_requested`` back each time. A
worker that dies stops beating; ``services.fail_lost_jobs`` then ends the job as failed. The training
and calibration data are rendered smart-park scenes, as in ``benchmarks/compression.py``.

A package's ``selftest.npz`` holds uint8 NCHW frames under the IR's input tensor name and the reference
executor's outputs for them under the IR's output names: a runtime feeds the one and compares the others.
"""

import hashlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Max
from django.utils import timezone

from fleet_server.registry import checkpoints, presets
from fleet_server.registry.content_keys import seal_content_key
from fleet_server.registry.models import CompressionJob, JobStatus, ModelFamily, ModelVersion, Package
from fleet_server.registry.storage import blob_store, signing_keyring

logger = logging.getLogger(__name__)

# Rendered scenes of training seed 1 (the benchmark's), never the held-out seeds: training batches start at
# index 0, calibration and self-test frames far beyond any training run's length.
TRAINING_SEED = 1
CALIBRATION_INDEX = 5_000_000
SELFTEST_INDEX = 6_000_000
MAX_TRAINING_FRAMES = 4096
CALIBRATION_BATCH = 8
RUNTIMES = ["reference", "cpu-int8"]
# The first agent release that reads package format 1.
MIN_AGENT_VERSION = "0.1.0"
METRIC_NAME = "mAP50"
TRAINING_PHASES = ("admm", "finetune")
LOSS_CURVE_POINTS = 1000
LOG_LINES_KEPT = 300


class JobStopped(Exception):
    """The job ends early without an error of its own: cancelled, or ended by someone else meanwhile."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def run_job(job_id: int, listener: Callable[["ProgressReporter"], None] | None = None) -> str | None:
    """Run a queued job to its end; returns its final status, or None if it was not queued (a redelivery).

    `listener`, if given, sees the reporter after every progress event (the CLI prints a progress line).
    """
    now = timezone.now()
    claimed = CompressionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, worker=f"{socket.gethostname()}:{os.getpid()}"
    )
    if not claimed:
        logger.info("compression job %s is not queued (cancelled, finished or running elsewhere): skipped", job_id)
        return None
    job = CompressionJob.objects.select_related("model_version__family").get(pk=job_id)
    reporter = ProgressReporter(job, listener)
    with Heartbeat(job.pk):
        try:
            _compress_and_package(job, reporter)
        except JobStopped as stop:
            reporter.finish(stop.status, stop.reason)
            return stop.status
        except KeyboardInterrupt:  # Ctrl-C on `manage.py compress_model`
            reporter.finish(JobStatus.CANCELLED, "interrupted")
            raise
        except Exception as error:  # whatever breaks, the job ends failed with the reason, never stuck running
            logger.exception("compression job %s failed", job.pk)
            reporter.finish(JobStatus.FAILED, _reason(error))
            return JobStatus.FAILED
    return JobStatus.SUCCEEDED


def _reason(error: Exception) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(error, SoftTimeLimitExceeded):
        return f"time limit: the job ran longer than COMPRESSION_TIME_LIMIT_S={settings.COMPRESSION_TIME_LIMIT_S} s"
    return f"{type(error).__name__}: {error}"[:2000]


class ProgressReporter:
    """The compress() progress callback: keeps the job row's progress, loss curve and log current.

    ``step``/``total`` count the whole job: every training step, then one step per later phase. Writes are
    throttled to one per ``COMPRESSION_PROGRESS_INTERVAL_S`` (and one per phase change); each write reads
    ``cancel_requested`` back and stops the run by raising JobStopped.
    """

    def __init__(self, job: CompressionJob, listener: Callable[["ProgressReporter"], None] | None = None):
        self.job_id = job.pk
        self.listener = listener
        self.preset = presets.get_preset(job.preset)
        self.training_total = presets.training_steps(self.preset, job.config)
        self.later_phases = [
            *([] if self.preset.trains else ["project"]),
            "calibration",
            "lowering",
            *(["evaluation"] if job.config.get("eval_frames_per_condition") else []),
            "packaging",
        ]
        self.total = self.training_total + len(self.later_phases)
        self.step = 0
        self.trained = 0
        self.phase = ""
        self.losses: list[list[float]] = []
        self.lines = list(job.log)
        self.interval = settings.COMPRESSION_PROGRESS_INTERVAL_S
        self.last_write = 0.0
        self.seen_admm = False

    def __call__(self, progress) -> None:
        self._record(progress)
        if self.listener is not None:
            self.listener(self)

    def _record(self, progress) -> None:
        phase = progress.phase
        if phase == "admm":
            self.seen_admm = True
        if phase == "done":
            return
        if phase in TRAINING_PHASES and progress.loss is not None:
            self.trained += 1
            self.losses.append([self.trained, round(float(progress.loss), 5)])
            self.step = min(self.trained, self.training_total)
            if self.preset.pruned and not self.seen_admm:
                phase = "prune"  # pruning's own fine-tuning between its steps
        elif phase in self.later_phases:
            self.step = self.training_total + self.later_phases.index(phase)
        if phase != self.phase:
            self.phase = phase
            self.log(f"{phase}")
            self.write()
            return
        if phase in TRAINING_PHASES and self._at_tenth(progress):
            loss = f", loss {progress.loss:.4f}" if progress.loss is not None else ""
            residual = f", residual {progress.residual:.4f}" if progress.residual is not None else ""
            self.log(f"{phase} {progress.step}/{progress.total}{loss}{residual}")
        if time.monotonic() - self.last_write >= self.interval:
            self.write()

    @staticmethod
    def _at_tenth(progress) -> bool:
        every = max(1, progress.total // 10)
        return progress.step % every == 0 or progress.step == progress.total

    def enter(self, phase: str) -> None:
        from compression.progress import Progress

        self(Progress(phase, 1, 1))

    def log(self, text: str) -> None:
        self.lines.append(f"{timezone.now():%H:%M:%S} {text}")
        del self.lines[:-LOG_LINES_KEPT]

    def loss_curve(self) -> list[list[float]]:
        stride = math.ceil(len(self.losses) / LOSS_CURVE_POINTS) if self.losses else 1
        curve = self.losses[::stride]
        if self.losses and curve[-1] is not self.losses[-1]:
            curve.append(self.losses[-1])
        return curve

    def fields(self) -> dict:
        return {
            "phase": self.phase,
            "step": self.step,
            "total": self.total,
            "loss_curve": self.loss_curve(),
            "log": self.lines,
            "heartbeat_at": timezone.now(),
        }

    def write(self) -> None:
        """Save progress; raise JobStopped if a user asked to cancel or the job was ended elsewhere."""
        self.last_write = time.monotonic()
        CompressionJob.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(**self.fields())
        state = CompressionJob.objects.filter(pk=self.job_id).values("status", "cancel_requested").first()
        if state is None:
            raise JobStopped(JobStatus.CANCELLED, "the job was deleted while running")
        if state["status"] != JobStatus.RUNNING:
            raise JobStopped(state["status"], f"the job was marked {state['status']} while running")
        if state["cancel_requested"]:
            raise JobStopped(JobStatus.CANCELLED, "cancelled by a user")

    def finish(self, status: str, reason: str) -> None:
        self.log(f"{status}: {reason}")
        fields = self.fields()
        fields.update(status=status, error=reason, finished_at=timezone.now())
        CompressionJob.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(**fields)


class Heartbeat:
    """A thread that stamps the job's heartbeat while the worker is alive, also through phases without progress."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.interval = max(0.2, settings.COMPRESSION_HEARTBEAT_TIMEOUT_S / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-job-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    CompressionJob.objects.filter(pk=self.job_id, status=JobStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as error:  # the next beat retries; a long outage ends as "worker lost"
                    logger.warning("heartbeat of compression job %s failed: %s", self.job_id, error)
        finally:
            connections.close_all()  # this thread's own connections


# --- the compression itself ------------------------------------------------------------------------


def _compress_and_package(job: CompressionJob, reporter: ProgressReporter) -> Package:
    from compression.admm import AdmmQuantConfig
    from compression.pipeline import CompressConfig, compress
    from compression.pruning import PruneConfig

    preset, config, version = reporter.preset, job.config, job.model_version
    reporter.log(f"loading {version} ({version.parameters:,} parameters)")
    with blob_store().open(version.blob_sha256) as file:
        model = checkpoints.load_detector(file)
    inputs = compression_inputs(preset, config, version, reporter)
    quantization = AdmmQuantConfig(
        codebook=preset.codebook,
        narrow_codebook=preset.narrow_codebook,
        sensitive_codebook=preset.sensitive_codebook,
        admm_steps=config["admm_steps"] if preset.trains else 0,
        finetune_steps=config["finetune_steps"] if preset.trains else 0,
        learning_rate=config.get("learning_rate", AdmmQuantConfig.learning_rate),
        finetune_codes=bool(config.get("finetune_codes", False)),
        progress_every=1,
    )
    pruning = None
    if preset.pruned:
        pruning = PruneConfig(
            target_sparsity=config["target_sparsity"],
            pruning_steps=config["pruning_steps"],
            finetune_steps_per_pruning_step=config["finetune_steps_per_pruning_step"],
            learning_rate=config.get("pruning_learning_rate", PruneConfig.learning_rate),
            # Taylor importance ranks all layers together (docs/architecture.md); magnitudes only per layer.
            scope="global" if preset.trains else "layer",
            progress_every=1,
        )
    compress_config = CompressConfig(
        quantization=quantization,
        pruning=pruning,
        data_free=preset.data_free,
        distillation_weight=config.get("distillation_weight", 0.0),
        input_shape=tuple(version.input_shape),
        metadata={"family": version.family.name, "model_version": version.version, "preset": preset.key},
    )
    result = compress(
        model,
        compress_config,
        data=inputs.data,
        loss_fn=inputs.loss_fn,
        calibration=inputs.calibration,
        metric=inputs.metric,
        progress=reporter,
    )
    reporter.enter("packaging")
    return save_package(job, result, reporter)


@dataclass
class CompressionInputs:
    data: object | None
    loss_fn: object | None
    calibration: list
    metric: object | None


def compression_inputs(preset, config: dict, version: ModelVersion, reporter: ProgressReporter) -> CompressionInputs:
    from smartpark.detector import preprocess

    shape = tuple(version.input_shape)
    data = loss_fn = None
    if preset.trains:
        frames = min(MAX_TRAINING_FRAMES, config["batch_size"] * presets.training_steps(preset, config))
        data = _training_batches(config["batch_size"], max(frames, config["batch_size"]))
        loss_fn = _detector_loss
    calibration = []
    if not preset.data_free:
        frames = rendered_frames(CALIBRATION_INDEX, config["calibration_frames"], shape)
        calibration = [preprocess(frames[i : i + CALIBRATION_BATCH]) for i in range(0, len(frames), CALIBRATION_BATCH)]
    metric = _detection_metric(config.get("eval_frames_per_condition", 0), version, reporter)
    return CompressionInputs(data, loss_fn, calibration, metric)


def _training_batches(batch_size: int, frames: int):
    import torch
    from torch.utils.data import DataLoader

    from smartpark.train import SceneTargets

    # In the worker's own process: Celery's pool processes are daemons and may not start DataLoader workers.
    return DataLoader(
        SceneTargets(seed=TRAINING_SEED, length=frames),
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        generator=torch.Generator().manual_seed(TRAINING_SEED),
    )


def _detector_loss(model, batch):
    from smartpark.train import _to_training_input, centernet_loss

    # fp32, unlike the training script's bfloat16 autocast: that is faster only on CPUs with AVX512-BF16
    # and several times slower on the AVX2 workers a platform is as likely to run on.
    batch = dict(batch)
    loss, _ = centernet_loss(model(_to_training_input(batch.pop("image"))), batch)
    return loss


def rendered_frames(first_index: int, count: int, input_shape) -> np.ndarray:
    """(count, H, W, 3) uint8 rendered training-distribution frames, resized to the model's input size."""
    import cv2

    from smartpark.scenes import render_training_sample
    from smartpark.train import SEEDS_PER_RUN

    height, width = input_shape[2], input_shape[3]
    frames = []
    for index in range(count):
        image = render_training_sample(TRAINING_SEED * SEEDS_PER_RUN + first_index + index).image
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        frames.append(image)
    return np.stack(frames)


def _detection_metric(frames_per_condition: int, version: ModelVersion, reporter: ProgressReporter):
    """mAP@0.5 on held-out scenes, of the float model and of the integer model run by ONNX Runtime."""
    if not frames_per_condition:
        return None
    from smartpark.detections import LABELS
    from smartpark.evaluate import heldout_frames
    from smartpark.scenes import FRAME_HEIGHT, FRAME_WIDTH

    if tuple(version.family.labels) != tuple(LABELS):
        reporter.log(f"no mAP: the held-out scenes are labelled {', '.join(LABELS)}, this family is not")
        return None
    if tuple(version.input_shape[2:]) != (FRAME_HEIGHT, FRAME_WIDTH):
        reporter.log(
            f"no mAP: the held-out frames are {FRAME_HEIGHT}x{FRAME_WIDTH}, the input is {version.input_shape}"
        )
        return None
    frames = heldout_frames(frames_per_condition)

    def metric(subject) -> float:
        from torch import nn

        from smartpark.evaluate import evaluate_detector

        if isinstance(subject, nn.Module):
            reporter.log(f"measuring {METRIC_NAME} of the float model on {len(frames)} held-out frames")
            return evaluate_detector(subject, frames)["overall"]["mAP50"]
        reporter.enter("evaluation")
        return evaluate_detector(OnnxDetector(subject), frames)["overall"]["mAP50"]

    return metric


class OnnxDetector:
    """The integer model exported to ONNX int8 and run by ONNX Runtime, as a device's cpu-int8 runtime runs it."""

    def __init__(self, integer_model):
        import onnxruntime as ort

        from compression.onnx_export import export_onnx

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(export_onnx(integer_model), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray):
        from smartpark.decode import decode
        from smartpark.evaluate import EVAL_SCORE_THRESHOLD

        batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        heatmap, log_size, offset = self.session.run(None, {self.input: batch})
        return decode(heatmap, log_size, offset, image_size=images.shape[1:3], score_threshold=EVAL_SCORE_THRESHOLD)


# --- the package ---------------------------------------------------------------------------------


def selftest_set(integer_model, frames_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Frames under the model's input name and the reference executor's outputs under theirs."""
    from model_store import reference

    (input_name,) = integer_model.inputs
    batch = np.ascontiguousarray(frames_nhwc.transpose(0, 3, 1, 2))
    outputs = reference.run(integer_model, batch)
    return {input_name: batch, **{name: np.asarray(outputs[name]) for name in integer_model.outputs}}


def compression_summary(job: CompressionJob, report) -> dict:
    return {
        "preset": job.preset,
        "codebook": presets.get_preset(job.preset).codebook_label,
        "data_free": report.data_free,
        "compression_ratio": round(report.compression_ratio, 3),
        "fp32_bytes": report.fp32_bytes,
        "model_bytes": report.packed_bytes,
        "sparsity": round(report.sparsity, 4),
        "metric": METRIC_NAME if report.metric_after is not None else None,
        "metric_before": report.metric_before,
        "metric_after": report.metric_after,
        "source_version": job.model_version.version,
        "job": job.pk,
    }


def save_package(job: CompressionJob, result, reporter: ProgressReporter) -> Package:
    """Sign, encrypt and store the package, and end the job as succeeded, in one transaction."""
    from compression.onnx_export import export_onnx
    from model_store.crypto import encrypt_package
    from model_store.package import build_package, read_package
    from model_store.serialization import to_bytes

    started = time.perf_counter()
    version = job.model_version
    integer_model, report = result.integer_model, result.report
    ir_bytes, onnx_bytes = to_bytes(integer_model), export_onnx(integer_model)
    frames = rendered_frames(SELFTEST_INDEX, job.config["selftest_frames"], version.input_shape)
    selftest = selftest_set(integer_model, frames)
    signing_key = signing_keyring().active()
    summary = compression_summary(job, report)
    with transaction.atomic():
        family = ModelFamily.objects.select_for_update().get(pk=version.family_id)
        number = (family.packages.aggregate(latest=Max("version"))["latest"] or 0) + 1
        plaintext = build_package(
            name=family.name,
            version=number,
            task=family.task,
            labels=list(family.labels),
            input_spec=dict(version.input_spec),
            ir_bytes=ir_bytes,
            onnx_bytes=onnx_bytes,
            selftest=selftest,
            compression=summary,
            runtimes=RUNTIMES,
            min_agent_version=MIN_AGENT_VERSION,
            signing_key=signing_key,
        )
        ciphertext, content_key = encrypt_package(plaintext)
        digest = blob_store().put_bytes(ciphertext)
        manifest = read_package(plaintext, {signing_key.key_id: signing_key.public_key}).manifest.to_dict()
        package = Package.objects.create(
            model_version=version,
            family=family,
            job=job,
            version=number,
            runtimes=RUNTIMES,
            codebook=summary["codebook"],
            blob_sha256=digest,
            size_bytes=len(ciphertext),
            plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
            sealed_content_key=seal_content_key(content_key, digest),
            signer_key_id=signing_key.key_id,
            manifest=manifest,
            metric_name=METRIC_NAME if report.metric_after is not None else "",
            metric_before=report.metric_before,
            metric_after=report.metric_after,
            compression_ratio=report.compression_ratio,
            model_bytes=report.packed_bytes,
            fp32_bytes=report.fp32_bytes,
        )
        timings = {**report.timings, "packaging": time.perf_counter() - started}
        reporter.step = reporter.total
        reporter.log(f"package {family.name} v{number}: {len(ciphertext):,} bytes, {report.compression_ratio:.1f}x")
        fields = reporter.fields()
        fields.update(
            status=JobStatus.SUCCEEDED,
            report={**report.to_dict(), "markdown": report.markdown()},
            timings={name: round(seconds, 3) for name, seconds in timings.items()},
            finished_at=timezone.now(),
        )
        ended = CompressionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested=False).update(
            **fields
        )
        if not ended:  # cancelled or ended elsewhere during packaging: nothing of this run is kept
            state = CompressionJob.objects.filter(pk=job.pk).values("status", "cancel_requested").first() or {}
            if state.get("cancel_requested"):
                raise JobStopped(JobStatus.CANCELLED, "cancelled by a user")
            raise JobStopped(state.get("status", JobStatus.CANCELLED), "the job was ended elsewhere while packaging")
    return package
