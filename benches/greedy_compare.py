"""Ours against Greedy on one phantom (issue: the diffeomorphic engine).

Runs `diffeoreg register` and Greedy (picsl-greedy: rigid with 6 DOF, then `-sv` deformable,
composed into one field) on a phantom made by `diffeoreg phantom`, and reports for each the
wall time and the endpoint error against the phantom's true forward field inside the head
(fixed > −500 HU). Prints one JSON object.

    python3 benches/greedy_compare.py target/release/diffeoreg PHANTOM_DIR WORK_DIR
"""

import json
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np


def field(path):
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))[:, :, :, 0, :]


def endpoint_error(path, truth, head):
    error = np.linalg.norm(field(path) - truth, axis=-1)[head]
    return {"mean_mm": float(error.mean()), "p95_mm": float(np.percentile(error, 95)), "max_mm": float(error.max())}


class quiet_stdout:
    """Greedy's C++ code prints its progress to file descriptor 1; keep it off our JSON."""

    def __enter__(self):
        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)

    def __exit__(self, *args):
        os.dup2(self.saved, 1)
        os.close(self.null)
        os.close(self.saved)


def greedy_register(fixed, moving, work):
    """Greedy as we compare against it: rigid (6 DOF, NCC, image centres), then `-sv` NCC
    deformable; writes the composed fields work/greedy_composed.nii.gz (fixed grid, fixed →
    moving points) and work/greedy_composed_inverse.nii.gz (moving grid)."""
    from picsl_greedy import Greedy3D
    greedy = Greedy3D()
    with quiet_stdout():
        greedy.execute(f"-d 3 -a -dof 6 -ia-image-centers -m NCC 2x2x2 -n 100x50x10 -i {fixed} {moving} "
                       f"-o {work}/rigid.mat")
        greedy.execute(f"-d 3 -sv -m NCC 2x2x2 -n 100x50x20 -s 1.7vox 0.7vox -it {work}/rigid.mat "
                       f"-i {fixed} {moving} -o {work}/greedy_warp.nii.gz -oinv {work}/greedy_inverse.nii.gz")
        greedy.execute(f"-d 3 -rf {fixed} -rc {work}/greedy_composed.nii.gz -r {work}/greedy_warp.nii.gz "
                       f"{work}/rigid.mat")
        greedy.execute(f"-d 3 -rf {moving} -rc {work}/greedy_composed_inverse.nii.gz -r {work}/rigid.mat,-1 "
                       f"{work}/greedy_inverse.nii.gz")


def main():
    binary, phantom, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    fixed, moving = f"{phantom}/fixed.nii.gz", f"{phantom}/moving.nii.gz"
    truth = field(f"{phantom}/truth_fwd.nii.gz")
    head = np.asarray(nib.load(fixed).get_fdata()) > -500
    results = {"voxels": list(head.shape), "identity_epe_mm": float(np.linalg.norm(truth, axis=-1)[head].mean())}

    start = time.perf_counter()
    subprocess.run([binary, "register", "--fixed", fixed, "--moving", moving, "--out", f"{work}/ours"], check=True,
                   capture_output=True)
    results["diffeoreg"] = {"wall_s": time.perf_counter() - start,
                            "epe": endpoint_error(f"{work}/ours/warp_fwd.nii.gz", truth, head)}

    start = time.perf_counter()
    greedy_register(fixed, moving, work)
    results["greedy"] = {"wall_s": time.perf_counter() - start,
                         "epe": endpoint_error(f"{work}/greedy_composed.nii.gz", truth, head)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
