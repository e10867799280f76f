#!/usr/bin/env python3
"""Wall time of `register` on a real-CT pair whose fixed image is resampled to a chosen number of
slices (256×256×128 from Cranium's 256×256×108: the size the network's speed target names).

    python3 benches/register_speed.py BIN PAIR WORK [--slices 128] [--repeats 3] [--method network]

PAIR is a folder made by `BIN phantom --ct Cranium.inv3 --varied --seed N --out PAIR` (fixed.nii.gz,
moving.nii.gz). The fixed image is resampled along its third axis by linear interpolation, keeping
its first and last slice centres; the moving image is used as it is. Each run's stage timings
(report.json) are printed as one JSON line, then the fastest and the median total. Timings on a
shared machine vary from run to run: compare medians taken in one sitting.
"""

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np


def resample_slices(source, target, slices):
    image = nib.load(source)
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    count = voxels.shape[2]
    step = (count - 1) / (slices - 1)
    position = np.arange(slices) * step
    low = np.minimum(np.floor(position).astype(int), count - 2)
    weight = (position - low).astype(np.float32)
    resampled = voxels[:, :, low] * (1 - weight) + voxels[:, :, low + 1] * weight
    affine = image.affine.copy()
    affine[:3, 2] *= step
    out = nib.Nifti1Image(resampled.astype(np.float32), affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    nib.save(out, target)
    return resampled.shape


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("pair")
    parser.add_argument("work")
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="network")
    parser.add_argument("--register-args", default="", help="extra arguments for register")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fixed = work / "fixed.nii.gz"
    shape = resample_slices(Path(args.pair) / "fixed.nii.gz", fixed, args.slices)
    totals = []
    for repeat in range(args.repeats):
        out = work / f"run{repeat}"
        command = [args.binary, "register", "--fixed", str(fixed), "--moving", str(Path(args.pair) / "moving.nii.gz"),
                   "--method", args.method, "--out", str(out)] + args.register_args.split()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        report = json.loads((out / "report.json").read_text())
        timings = {k: round(v, 2) for k, v in report["timings"].items()}
        totals.append(timings["total_s"])
        print(json.dumps({"shape": list(shape), "method": args.method, "run": repeat, "timings": timings}))
    print(json.dumps({"shape": list(shape), "method": args.method, "fastest_s": min(totals),
                      "median_s": statistics.median(totals)}))


if __name__ == "__main__":
    main()
