"""Accuracy on real anatomy: pairs made from a real head CT, ours against rigid-only and Greedy.

For each seed, `diffeoreg phantom --ct CT --varied --seed S` makes a pair with a known answer
(deformation at one or two scales, rigid offset, the pseudo-CT's grid, blur, bone mis-estimated,
soft-tissue offset, bias field, filled cavities, noise, all drawn from the seed; `--unrelated`
seeds also put the pseudo-CT in another scanner's frame). Each method registers it; every
result, and the rigid-only start of the first method, is judged by `diffeoreg evaluate --batch`
against the truth, both directions, per region (bone, soft tissue, fat, skin band 0-5 mm, deeper
than 20 mm). Prints a Markdown table per pair and a summary, and writes WORK/results.json.

    python3 benches/real_ct.py target/release/diffeoreg target/real-ct/Cranium.inv3 WORK \\
        --seeds 101,102 [--unrelated 103] [--methods optimize,network,hybrid,greedy,niftyreg] [--register-args="--lambda 0.01 ..."]
        [--niftyreg-bin DIR]

NiftyReg (method `niftyreg`) runs in the thesis' configuration: `reg_aladin -rigOnly`, then
`reg_f3d -vel -ln 3 -maxit 150` (NMI). It is not on PyPI as a wheel; build it from its source
distribution: `pip download --no-deps --no-binary :all: niftyreg` (or the sdist from PyPI's JSON),
then `cmake SRC -DCMAKE_BUILD_TYPE=Release -DCMAKE_POLICY_VERSION_MINIMUM=3.5 -DUSE_OPENMP=ON
-DCMAKE_INSTALL_PREFIX=DIR/..` and `make install`; pass the folder of its programs.

Seeds: 1-99 are development seeds (defaults may be chosen on them); 101 and above are held out
(report only; never tune on them).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from greedy_compare import greedy_register  # noqa: E402

REGIONS = ["bone", "soft tissue", "fat", "skin band 0-5 mm", "deeper than 20 mm"]


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode not in (0, 3):
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def case_row(case, method, pair, out, rigid):
    """A row of `evaluate --batch`'s CSV: a registration in OUT of the pair folder PAIR."""
    return (f"{case},{method},{pair}/fixed.nii.gz,{pair}/moving.nii.gz,{out}/warp_fwd.nii.gz,"
            f"{out}/warp_inv.nii.gz,{pair}/truth_fwd.nii.gz,{pair}/truth_inv.nii.gz,{rigid}")


def evaluate_batch(binary, work, rows):
    """Judges every row by `diffeoreg evaluate --batch` (WORK/cases.csv, WORK/evaluation/) and
    returns its metrics.json: one record per row, with `case`, `method` and `evaluation`."""
    with open(f"{work}/cases.csv", "w") as f:
        f.write("\n".join(["case,method,fixed,moving,warp,inverse,truth,truth_inverse,rigid"] + rows) + "\n")
    run([binary, "evaluate", "--batch", f"{work}/cases.csv", "--out", f"{work}/evaluation"])
    with open(f"{work}/evaluation/metrics.json") as f:
        return json.load(f)


def make_pair(binary, ct, folder, seed, unrelated):
    if not os.path.exists(f"{folder}/truth_fwd.nii.gz"):
        command = [binary, "phantom", "--ct", ct, "--out", folder, "--seed", str(seed), "--varied"]
        run(command + (["--unrelated-frame"] if unrelated else []))
    with open(f"{folder}/phantom.json") as f:
        return json.load(f)


def register_ours(binary, pair, out, method, extra):
    start = time.perf_counter()
    run([binary, "register", "--fixed", f"{pair}/fixed.nii.gz", "--moving", f"{pair}/moving.nii.gz", "--out", out,
         "--method", method] + extra)
    wall = time.perf_counter() - start
    with open(f"{out}/report.json") as f:
        report = json.load(f)
    return {"wall_s": wall, "verdict": report["verdict"]["status"],
            "reasons": [r["message"] for r in report["verdict"]["reasons"]]}


def register_greedy(pair, out):
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    greedy_register(f"{pair}/fixed.nii.gz", f"{pair}/moving.nii.gz", out)
    os.replace(f"{out}/greedy_composed.nii.gz", f"{out}/warp_fwd.nii.gz")
    os.replace(f"{out}/greedy_composed_inverse.nii.gz", f"{out}/warp_inv.nii.gz")
    return {"wall_s": time.perf_counter() - start, "verdict": None, "reasons": []}


def register_niftyreg(pair, out, bindir):
    """NiftyReg: rigid, then the symmetric velocity-field B-spline registration; its forward
    deformation (fixed grid) and backward one (moving grid), rigid part included, converted from
    NiftyReg's RAS displacements to the ITK convention (LPS) our `evaluate` reads."""
    import nibabel as nib
    import numpy as np
    os.makedirs(out, exist_ok=True)
    fixed, moving = f"{pair}/fixed.nii.gz", f"{pair}/moving.nii.gz"
    start = time.perf_counter()
    run([f"{bindir}/reg_aladin", "-ref", fixed, "-flo", moving, "-rigOnly", "-aff", f"{out}/rigid.txt",
         "-res", f"{out}/rigid_resampled.nii.gz"])
    run([f"{bindir}/reg_f3d", "-ref", fixed, "-flo", moving, "-aff", f"{out}/rigid.txt", "-vel", "-ln", "3",
         "-maxit", "150", "-cpp", f"{out}/cpp.nii.gz", "-res", f"{out}/resampled.nii.gz"])
    wall = time.perf_counter() - start
    for cpp, reference, name in [("cpp.nii.gz", fixed, "warp_fwd"), ("cpp_backward.nii.gz", moving, "warp_inv")]:
        run([f"{bindir}/reg_transform", "-ref", reference, "-disp", f"{out}/{cpp}", f"{out}/{name}_ras.nii.gz"])
        image = nib.load(f"{out}/{name}_ras.nii.gz")
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3] + (1, 3))
        data[..., 0] *= -1.0
        data[..., 1] *= -1.0
        converted = nib.Nifti1Image(data, image.affine)
        converted.header.set_intent("vector")
        nib.save(converted, f"{out}/{name}.nii.gz")
    return {"wall_s": wall, "verdict": None, "reasons": []}


def epe(direction):
    e = direction.get("endpoint_error") or {}
    regions = {r["region"]: r["error"]["mean_mm"] for r in direction.get("endpoint_error_by_region", [])}
    return {"mean": e.get("mean_mm"), "p95": e.get("p95_mm"), "max": e.get("max_mm"), "regions": regions}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("ct")
    parser.add_argument("work")
    parser.add_argument("--seeds", default="101,102,103,104,105,106,107,108")
    parser.add_argument("--unrelated", default="", help="seeds whose pseudo-CT lies in another frame")
    parser.add_argument("--methods", default="optimize,greedy")
    parser.add_argument("--register-args", default="", help="extra arguments for our register")
    parser.add_argument("--niftyreg-bin", default="", help="folder of NiftyReg's programs (method niftyreg)")
    args = parser.parse_args()
    binary, work = os.path.abspath(args.binary), os.path.abspath(args.work)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    unrelated = {int(s) for s in args.unrelated.split(",") if s}
    methods = args.methods.split(",")
    extra = args.register_args.split()
    os.makedirs(work, exist_ok=True)

    results = {"ct": args.ct, "methods": methods, "register_args": extra, "pairs": []}
    rows = []
    for seed in sorted(set(seeds) | unrelated):
        case = f"seed{seed}"
        pair = f"{work}/{case}/pair"
        description = make_pair(binary, args.ct, pair, seed, seed in unrelated)
        entry = {"case": case, "seed": seed, "unrelated_frame": seed in unrelated,
                 "max_deformation_mm": description["max_deformation_mm"], "runs": {}}
        first_rigid = None
        for method in methods:
            out = f"{work}/{case}/{method}"
            if method == "greedy":
                entry["runs"][method] = register_greedy(pair, out)
            elif method == "niftyreg":
                entry["runs"][method] = register_niftyreg(pair, out, args.niftyreg_bin)
            else:
                entry["runs"][method] = register_ours(binary, pair, out, method, extra)
            rigid = f"{out}/rigid.tfm" if method not in ("greedy", "niftyreg") and first_rigid is None else ""
            first_rigid = first_rigid or rigid
            rows.append(case_row(case, method, pair, out, rigid))
        results["pairs"].append(entry)
        print(f"{case}: registered", file=sys.stderr)
    evaluated = evaluate_batch(binary, work, rows)
    by_key = {(r["case"], r["method"]): r["evaluation"] for r in evaluated}
    for entry in results["pairs"]:
        entry["epe"] = {}
        for method in ["Rigid"] + methods:
            evaluation = by_key.get((entry["case"], method))
            if evaluation is None:
                continue
            entry["epe"][method] = {"forward": epe(evaluation["forward"]),
                                    "backward": epe(evaluation["backward"]) if evaluation.get("backward") else None,
                                    "folding_voxels": evaluation["forward"]["jacobian"]["folding_voxels"]}
    with open(f"{work}/results.json", "w") as f:
        json.dump(results, f, indent=1)
    print_tables(results)


def print_tables(results):
    methods = ["Rigid"] + results["methods"]
    print("| pair | truth max mm | method | EPE fwd mean / p95 | EPE inv mean / p95 | "
          + " | ".join(REGIONS) + " | folding | wall s | verdict |")
    print("|" + "---|" * (9 + len(REGIONS) - 1))
    ratios = {m: [] for m in methods}
    for entry in results["pairs"]:
        if "Rigid" not in entry["epe"]:  # only other tools ran: no rigid-only start to compare with
            entry["epe"]["Rigid"] = {"forward": {"mean": float("nan")}, "backward": None, "folding_voxels": 0,
                                     "missing": True}
        rigid = entry["epe"]["Rigid"]["forward"]["mean"]
        for method in methods:
            e = entry["epe"].get(method)
            if e is None or e.get("missing"):
                continue
            f, b = e["forward"], e["backward"] or {}
            run_info = entry["runs"].get(method, {})
            regions = " | ".join(f"{f['regions'].get(r, float('nan')):.2f}" for r in REGIONS)
            both = 0.5 * (f["mean"] + b.get("mean", f["mean"]))
            rigid_both = 0.5 * (rigid + (entry["epe"]["Rigid"]["backward"] or {}).get("mean", rigid))
            ratios[method].append(both / rigid_both)
            print(f"| {entry['case']}{' (other frame)' if entry['unrelated_frame'] else ''} "
                  f"| {entry['max_deformation_mm']:.1f} | {method} | {f['mean']:.2f} / {f['p95']:.2f} "
                  f"| {b.get('mean', float('nan')):.2f} / {b.get('p95', float('nan')):.2f} | {regions} "
                  f"| {e['folding_voxels']} | {run_info.get('wall_s', float('nan')):.1f} "
                  f"| {run_info.get('verdict') or ''} |")
    print()
    for method in methods:
        if ratios[method]:
            mean = sum(ratios[method]) / len(ratios[method])
            print(f"{method}: mean EPE (both directions) / rigid-only = {mean:.3f} over {len(ratios[method])} pairs")


if __name__ == "__main__":
    main()
