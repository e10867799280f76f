"""Benchmark of volume input and output (issue: volumes in and out).

Generates a 512×512×300 CT series with pydicom (once, cached in the folder given), then times
`diffeoreg convert` of the series to .nii.gz and `diffeoreg info` of that .nii.gz (which reads
every voxel), taking the best of three runs, and reports each run's peak resident memory
against the volume's float32 size. Prints one JSON object.

    python3 benches/io_speed.py target/release/diffeoreg /tmp/diffeoreg-bench
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

SHAPE = (512, 512, 300)  # columns, rows, slices


def make_series(folder):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
    from pydicom.uid import generate_uid
    from refs import dicom_dataset

    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SHAPE[1], 0:SHAPE[0]]
    r = np.hypot((x - 256) / 200.0, (y - 256) / 160.0)
    base = np.where(r < 1.0, 40, -1000).astype(np.int32)
    base[(r > 0.9) & (r < 1.0)] = 900
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(SHAPE[2]):
        hu = base + rng.integers(-15, 15, size=base.shape) + (k % 50)
        stored = (hu + 1024).clip(0, 65535).astype(np.uint16)
        ds = dicom_dataset(stored, [-250.0, -250.0, -300.0 + 1.0 * k], [1, 0, 0, 0, 1, 0], [0.977, 0.977], k + 1,
                           series, study, frame)
        ds.save_as(os.path.join(folder, f"slice{k:04d}.dcm"), enforce_file_format=True)
    open(marker, "w").close()


def measure(command):
    """Wall seconds and peak resident memory (bytes) of one run."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if status != 0:
        raise SystemExit(f"{command} failed: {stderr}")
    return wall, usage.ru_maxrss * 1024


def best_of(runs, command):
    results = [measure(command) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    series = os.path.join(work, "series")
    make_series(series)
    output = os.path.join(work, "ct.nii.gz")
    float_bytes = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2]
    convert_s, convert_peak = best_of(3, [binary, "convert", series, output])
    read_s, read_peak = best_of(3, [binary, "info", output])
    print(json.dumps({
        "shape": SHAPE,
        "float32_volume_mb": round(float_bytes / 1e6, 1),
        "convert_dicom_to_nii_gz_s": round(convert_s, 3),
        "convert_peak_memory_mb": round(convert_peak / 1e6, 1),
        "convert_peak_over_float32": round(convert_peak / float_bytes, 2),
        "read_nii_gz_s": round(read_s, 3),
        "read_peak_memory_mb": round(read_peak / 1e6, 1),
        "read_peak_over_float32": round(read_peak / float_bytes, 2),
        "nii_gz_mb": round(os.path.getsize(output) / 1e6, 1),
        "cores": os.cpu_count(),
    }, indent=1))


if __name__ == "__main__":
    main()
