#!/usr/bin/env python3
"""How well the network's grid can hold a pair's true deformation at all.

The network predicts on the fixed grid downsampled by a whole factor (4 on the real CT's grid:
3.83×3.83×6.0 mm voxels). This takes a phantom pair's true forward field, averages it over
FACTOR×FACTOR×FACTOR blocks, interpolates it back to every voxel linearly (cell centres at
FACTOR·b + (FACTOR−1)/2, clamped at the border) and judges that field against the truth with
`diffeoreg evaluate`, the same endpoint error and body mask as every benchmark here. What it
leaves estimates how much a prediction on that grid must miss at best: block averages with
linear interpolation are not the best field the grid could hold, and the network's output is
also smoothed and exponentiated, so this is a guide to the floor's size, not a bound.

    python3 benches/representation_floor.py BINARY WORK PAIR [PAIR ...] [--factor 4]

PAIR: a folder made by `diffeoreg phantom` (fixed.nii.gz, moving.nii.gz, truth_fwd.nii.gz).
Needs numpy and nibabel.
"""
import argparse
import json
import os
import subprocess

import nibabel as nib
import numpy as np


def interpolate_back(coarse, n, factor):
    """Linear interpolation along axis 0 from block centres to n voxels."""
    centres = factor * np.arange(coarse.shape[0]) + (factor - 1) / 2
    x = np.arange(n)
    i = np.clip(np.searchsorted(centres, x) - 1, 0, len(centres) - 2)
    t = np.clip((x - centres[i]) / (centres[i + 1] - centres[i]), 0, 1)
    t = t.reshape((-1,) + (1,) * (coarse.ndim - 1))
    return coarse[i] * (1 - t) + coarse[i + 1] * t


def project(field, factor):
    """FIELD (x, y, z, 3) averaged over blocks and interpolated back; voxels past the last whole
    block take the interpolation's clamped border."""
    shape = field.shape[:3]
    if min(shape) < 2 * factor:
        raise SystemExit(f"a grid of {shape} voxels holds fewer than two blocks of {factor} along an axis")
    n = [s // factor * factor for s in shape]
    blocks = field[: n[0], : n[1], : n[2]].reshape(
        n[0] // factor, factor, n[1] // factor, factor, n[2] // factor, factor, 3).mean(axis=(1, 3, 5))
    out = blocks
    for axis in range(3):
        out = np.moveaxis(interpolate_back(np.moveaxis(out, axis, 0), shape[axis], factor), 0, axis)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary")
    parser.add_argument("work")
    parser.add_argument("pairs", nargs="+")
    parser.add_argument("--factor", type=int, default=4)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print("| pair | factor | floor EPE mean / p95 mm |")
    print("|---|---|---|")
    for pair in args.pairs:
        truth = nib.load(os.path.join(pair, "truth_fwd.nii.gz"))
        data = np.asarray(truth.dataobj, dtype=np.float32)
        field = data.reshape(data.shape[:3] + (3,))
        projected = project(field, args.factor).reshape(data.shape).astype(np.float32)
        # a pair folder's own name, or its parent's when it is called "pair" (benches/real_ct.py)
        parts = os.path.normpath(os.path.abspath(pair)).split(os.sep)
        name = parts[-2] if parts[-1] == "pair" else parts[-1]
        out = os.path.join(args.work, f"{name}_f{args.factor}")
        os.makedirs(out, exist_ok=True)
        warp = os.path.join(out, "floor_fwd.nii.gz")
        nib.save(nib.Nifti1Image(projected, truth.affine, truth.header), warp)
        subprocess.run([args.binary, "evaluate", "--fixed", os.path.join(pair, "fixed.nii.gz"),
                        "--moving", os.path.join(pair, "moving.nii.gz"), "--warp", warp,
                        "--truth", os.path.join(pair, "truth_fwd.nii.gz"), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "evaluation.json")) as f:
            evaluation = json.load(f)
        epe = evaluation["evaluation"]["forward"]["endpoint_error"]
        print(f"| {name} | {args.factor} | {epe['mean_mm']:.3f} / {epe['p95_mm']:.3f} |")


if __name__ == "__main__":
    main()
