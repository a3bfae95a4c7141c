"""What decord's get_batch really decodes: the keyframe-index estimate checked against timings.

``video_keyframes`` reports ``frames_converted`` (the candidates returned as pixels) and
``frames_decoded`` (estimated by replaying decord's seek rule on the video's keyframe index,
:func:`refinery.multimodal.keyframes.frames_decoded_by_seeking`). This script checks the estimate on
the same content encoded with different keyframe intervals (H.264: every frame a keyframe, one per
45 frames, and x264's default, one per 250 frames). Per video, in the same run, with the time to
open a reader subtracted (CPU seconds, best of ``--repeat``):

- single targets: ``get_batch([t])`` on a fresh reader for 12 frames t across the video, one frame
  converted each; a least-squares line ``time = a + b·estimate`` over them: ``b`` is the cost of one
  decoded frame, ``a`` of a conversion and a seek, and r says whether time follows the estimate
  (with one frame converted each, "decoded = converted" predicts a flat line);
- ``sparse_s``: ``get_batch`` of the candidates at 1 per second, measured, against
  ``candidates·a + estimate·b`` and against "decoded = candidates", ``candidates·(a + b)``.

    .venv/bin/python -m benchmarks.bench_keyframe_decode --seconds 20 --fps 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write(path: Path, frames, fps: int, width: int, height: int, gop: int | None) -> Path:
    import imageio_ffmpeg

    params = ["-g", str(gop), "-sc_threshold", "0"] if gop else []
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", output_params=params, ffmpeg_log_level="error"
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    writer.close()
    return path


def best(fn, repeat: int) -> float:
    """Least CPU time of ``repeat`` calls (all threads of the process: decord decodes in its own),
    which other processes on the machine do not inflate as they do wall time."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=352)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import decord

    from refinery.multimodal.keyframes import candidate_indices, frames_decoded_by_seeking
    from refinery.multimodal.video_synth import Stretch, video_frames

    stretches = [Stretch(args.seconds / 4, c, s) for c, s in (("red", "circle"), ("blue", "square"))] * 2
    frames = list(video_frames(stretches, args.fps, args.width, args.height, seed=3, background="noise"))
    # Fresh grain on every frame, as in camera footage: P-frames cost real decoding (on a static
    # background they are nearly empty, and decoding is too cheap to see next to a seek).
    grain = np.random.default_rng(0)
    frames = [np.clip(f + grain.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in frames]
    print(f"{len(frames)} frames, {args.width}x{args.height}, {args.fps} fps; candidates at 1 per second")
    print("| keyframes every | keyframes | candidates | decoded (est.) | b ms/decoded frame | r | sparse_s | "
          "predicted (est.) | predicted (decoded = candidates) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temp:
        for label, gop in (("frame", 1), ("45 frames", 45), ("x264 default (250)", None)):
            path = write(Path(temp) / f"{gop}.mp4", frames, args.fps, args.width, args.height, gop)

            def reader(path=path):
                return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)

            probe = reader()
            n, keys = len(probe), probe.get_key_indices()
            del probe
            idx = candidate_indices(n, float(args.fps), 1.0, 600)
            estimate = frames_decoded_by_seeking(idx, keys, n)
            open_s = best(reader, args.repeat)

            def get(indices):
                reader().get_batch(list(indices)).asnumpy()

            targets = np.unique(np.linspace(0, n - 1, 12).astype(int))
            single_est = np.array([frames_decoded_by_seeking([t], keys, n) for t in targets], dtype=float)
            single_s = np.array([best(lambda t=t: get([int(t)]), args.repeat) - open_s for t in targets])
            if np.ptp(single_est) > 0:
                b, a = np.polyfit(single_est, single_s, 1)
                r = float(np.corrcoef(single_est, single_s)[0, 1])
            else:  # every frame a keyframe: one decode per target, nothing to fit
                a, b, r = float(single_s.mean()), 0.0, float("nan")
            sparse_s = best(lambda idx=idx: get(idx.tolist()), args.repeat) - open_s
            print(
                f"| {label} | {len(keys)} | {len(idx)} | {estimate} | {1000 * b:.2f} | {r:.3f} | "
                f"{sparse_s:.3f} | {len(idx) * a + estimate * b:.3f} | {len(idx) * (a + b):.3f} |"
            )


if __name__ == "__main__":
    main()
