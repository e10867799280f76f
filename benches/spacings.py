"""One pair at three grid spacings: does a method's endpoint error depend on the voxel size?

The CT is registered as it is and resampled (SimpleITK, linear, outside -1024 HU) onto isotropic
grids of each `--spacings` value, keeping its origin, orientation and extent, as
`tests/common::real_ct_at` does. `diffeoreg phantom --ct ... --varied --seed S` then makes the
same pair (one deformation, rigid offset and pseudo-CT appearance, all in millimetres) from each;
every method registers each, and `diffeoreg evaluate --batch` judges all of them against their
truth. Prints mean EPE forward / inverse per spacing and the largest over the smallest.

    python3 benches/spacings.py target/release/diffeoreg target/real-ct/Cranium.inv3 WORK \\
        [--seed 105] [--spacings 1.5,2.2] [--methods network,optimize] [--model estimate=DIR ...]

`--same-pair` instead makes the pair once, from the CT as it is (`--unrelated` puts the
pseudo-CT in another scanner's frame, as `real_ct.py` does for seeds 107 and 108), and resamples
that pair onto each spacing: both images (linear, outside -1024 HU) and both truths (each
displacement vector interpolated linearly on its image's new grid), each on an isotropic grid of
its own origin, orientation and extent. Then only the sampling differs between the grids, not the
noise, blur or pseudo-CT grid the phantom draws for each. (`--unrelated` without `--same-pair`
makes every grid's pair in that frame.)

WORK keeps its pairs and registrations for the next run (WORK/mode.json says for which seed and
kind of pair; another seed or kind is refused).

`--model NAME=DIR` adds a `network` run with that model folder (e.g. the shipped model with
a zero head: the local estimate alone). Writes WORK/results.json.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_ct import case_row, evaluate_batch, run  # noqa: E402


def isotropic_like(image, spacing):
    """An empty grid of `image`'s origin, orientation and extent with isotropic voxels of `spacing` mm."""
    import SimpleITK as sitk

    extent = [(n - 1) * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    grid = sitk.Image([int(round(e / spacing)) + 1 for e in extent], sitk.sitkFloat32)
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    grid.SetSpacing([spacing] * 3)
    return grid


def resample_ct(source, spacing, out):
    import SimpleITK as sitk

    ct = sitk.ReadImage(source)
    grid = sitk.Resample(ct, isotropic_like(ct, spacing), sitk.Transform(), sitk.sitkLinear, -1024.0,
                         sitk.sitkFloat32)
    sitk.WriteImage(grid, out)


def resample_pair(pair, spacing, out):
    """PAIR (fixed, moving and their truths) resampled onto isotropic grids of `spacing` mm in OUT."""
    import SimpleITK as sitk

    os.makedirs(out, exist_ok=True)
    for image, truth in [("fixed", "truth_fwd"), ("moving", "truth_inv")]:
        source = sitk.ReadImage(f"{pair}/{image}.nii.gz")
        grid = isotropic_like(source, spacing)
        sitk.WriteImage(sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32),
                        f"{out}/{image}.nii.gz")
        field = sitk.ReadImage(f"{pair}/{truth}.nii.gz")
        sitk.WriteImage(sitk.Resample(field, grid, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID()),
                        f"{out}/{truth}.nii.gz")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("ct")
    parser.add_argument("work")
    parser.add_argument("--seed", type=int, default=105)
    parser.add_argument("--spacings", default="1.5,2.2", help="isotropic spacings besides the CT's own, mm")
    parser.add_argument("--methods", default="network,optimize")
    parser.add_argument("--same-pair", action="store_true", help="resample one pair, not the CT")
    parser.add_argument("--unrelated", action="store_true", help="the pseudo-CT in another scanner's frame")
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR: a network run with this model")
    args = parser.parse_args()
    binary, work = os.path.abspath(args.binary), os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    runs = [(m, ["--method", m]) for m in args.methods.split(",") if m]
    for named in args.model:
        name, folder = named.split("=", 1)
        runs.append((name, ["--method", "network", "--model", os.path.abspath(folder)]))

    # Pairs and registrations in WORK are reused: refuse a WORK made for another seed or kind of pair.
    mode = {"seed": args.seed, "same_pair": args.same_pair, "unrelated": args.unrelated}
    mode_file = f"{work}/mode.json"
    if os.path.exists(mode_file):
        with open(mode_file) as f:
            made_for = json.load(f)
        if made_for != mode:
            sys.exit(f"{work} holds pairs made for {made_for}, not {mode}: choose another WORK")
    elif os.path.exists(f"{work}/own/pair"):
        sys.exit(f"{work} holds pairs of an unknown kind (no mode.json): choose another WORK")
    with open(mode_file, "w") as f:
        json.dump(mode, f)

    own = f"{work}/ct.nii.gz"
    if not os.path.exists(own):
        run([binary, "convert", args.ct, own])
    grids = [("own", own)]
    for spacing in [s for s in args.spacings.split(",") if s]:
        path = f"{work}/ct{spacing}.nii.gz"
        if not args.same_pair and not os.path.exists(path):
            resample_ct(own, float(spacing), path)
        grids.append((spacing, path))
    frame = ["--unrelated-frame"] if args.unrelated else []

    rows = []
    for grid, ct in grids:
        pair = f"{work}/{grid}/pair"
        if not os.path.exists(f"{pair}/truth_fwd.nii.gz"):
            if args.same_pair and grid != "own":
                resample_pair(f"{work}/own/pair", float(grid), pair)
            else:
                run([binary, "phantom", "--ct", ct, "--out", pair, "--seed", str(args.seed), "--varied"] + frame)
        for index, (name, extra) in enumerate(runs):
            out = f"{work}/{grid}/{name}"
            if not os.path.exists(f"{out}/report.json"):
                run([binary, "register", "--fixed", f"{pair}/fixed.nii.gz", "--moving", f"{pair}/moving.nii.gz",
                     "--out", out] + extra)
            rigid = f"{out}/rigid.tfm" if index == 0 else ""
            rows.append(case_row(grid, name, pair, out, rigid))
        print(f"{grid}: registered", file=sys.stderr)
    evaluated = evaluate_batch(binary, work, rows)

    table = {}
    for row in evaluated:
        e = row["evaluation"]
        table.setdefault(row["method"], {})[row["case"]] = (e["forward"]["endpoint_error"]["mean_mm"],
                                                           e["backward"]["endpoint_error"]["mean_mm"])
    with open(f"{work}/results.json", "w") as f:
        json.dump({"seed": args.seed, "same_pair": args.same_pair, "unrelated": args.unrelated,
                   "grids": [g for g, _ in grids], "epe_mm": table}, f, indent=1)
    names = [g for g, _ in grids]
    print(f"| method | {' | '.join(('CT grid' if g == 'own' else g + ' mm') for g in names)} | largest / smallest |")
    print("|---" * (len(names) + 2) + "|")
    for method in ["Rigid"] + [name for name, _ in runs]:
        cells = table.get(method, {})
        means = [sum(cells[g]) / 2 for g in names if g in cells]
        spread = max(means) / min(means) if means else float("nan")
        shown = [f"{cells[g][0]:.2f} / {cells[g][1]:.2f}" if g in cells else "-" for g in names]
        print(f"| {method} | {' | '.join(shown)} | {spread:.2f} |")


if __name__ == "__main__":
    main()
