"""Reference data and reference readings made with other tools (nibabel, pydicom, SimpleITK,
Greedy) for the Rust integration tests. Each subcommand writes files into a folder; the Rust
tests compare our reading of those files, or other tools' reading of ours.

Raw arrays are little-endian float32, x (column) fastest, as our Volume stores voxels.
"""

import json
import os
import random
import sys

import numpy as np


def save_raw(path, array):
    np.asarray(array, dtype="<f4").ravel(order="F").tofile(path)


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx @ ry


def ct_like(shape, seed=0):
    """A small CT-like volume in integer HU: air, a soft-tissue ellipsoid, fat rim, bone shell."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape, dtype=float)
    centre = [(n - 1) / 2 for n in shape]
    r = np.sqrt(sum(((idx[d] - centre[d]) / (0.45 * shape[d])) ** 2 for d in range(3)))
    hu = np.full(shape, -1000.0)
    hu[r < 1.0] = -100.0
    hu[r < 0.9] = 1200.0
    hu[r < 0.8] = 40.0
    hu += idx[0] * 3 - idx[1] * 2 + idx[2]  # a gradient so that any flip or shift shows
    hu += rng.integers(-20, 20, size=shape)
    return np.maximum(np.round(hu), -1024).astype(np.int16)


def nibabel_cases(out):
    import nibabel as nib

    os.makedirs(out, exist_ok=True)
    shape = (11, 9, 7)
    data = ct_like(shape).astype(np.float32)
    rot = rotation(0.3, -0.2, 0.5)
    zooms = np.array([0.8, 1.2, 2.5])
    oblique = np.eye(4)
    oblique[:3, :3] = rot * zooms
    oblique[:3, 3] = [-40.5, 12.25, 88.0]
    cases = {}

    # Oblique sform (code 2) with a different qform: the sform must win.
    img = nib.Nifti1Image(data, None)
    img.header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    img.header.set_sform(oblique, code=2)
    nib.save(img, f"{out}/oblique_sform.nii.gz")
    cases["oblique_sform.nii.gz"] = img

    # qform only, with a left-handed grid (qfac = -1).
    flipped = oblique.copy()
    flipped[:3, 2] *= -1
    img = nib.Nifti1Image(data, None)
    img.header.set_qform(flipped, code=1)
    img.header.set_sform(np.eye(4), code=0)
    nib.save(img, f"{out}/qform_only.nii")
    cases["qform_only.nii"] = img

    # Scaled int16.
    raw = ct_like(shape, seed=1)
    img = nib.Nifti1Image(raw, oblique)
    img.header.set_data_dtype(np.int16)
    img.header.set_slope_inter(0.5, -100.0)
    nib.save(img, f"{out}/scaled_int16.nii.gz")
    cases["scaled_int16.nii.gz"] = img

    # float64, axis aligned.
    img = nib.Nifti1Image(data.astype(np.float64), np.diag([-1.5, 1.0, 3.0, 1.0]))
    nib.save(img, f"{out}/float64.nii")
    cases["float64.nii"] = img

    for name in cases:
        loaded = nib.load(f"{out}/{name}")
        describe(loaded, f"{out}/{name}")


def describe(img, path):
    """Writes nibabel's reading of a file: best affine (RAS), shape, voxels."""
    data = np.asarray(img.get_fdata(dtype=np.float32))
    with open(path + ".json", "w") as f:
        json.dump({"affine_ras": img.affine.tolist(), "shape": list(data.shape),
                   "intent_code": int(img.header["intent_code"])}, f)
    save_raw(path + ".f32", data)


def nibabel_read(path):
    import nibabel as nib

    describe(nib.load(path), path)


def new_dataset(sop_class):
    """An empty explicit-little-endian dataset of a SOP class, with its file meta and UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def dicom_dataset(pixels_stored, position, orientation, spacing, index, series_uid, study_uid, frame_uid,
                  intercept=-1024.0, slope=1.0, modality="CT", description="test series"):
    from pydicom.uid import CTImageStorage

    ds = new_dataset(CTImageStorage)
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.PatientName = "Phantom^Test"
    ds.PatientID = "0001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.InstanceNumber = index
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{spacing[0]:.6f}", f"{spacing[1]:.6f}"]
    ds.SliceThickness = "2.0"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.Rows, ds.Columns = pixels_stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0 if pixels_stored.dtype == np.uint16 else 1
    ds.PixelData = np.ascontiguousarray(pixels_stored).tobytes()
    return ds


def dicom_series(out):
    """A CT series with oblique orientation, shuffled instance numbers and file names, unsigned
    storage with a negative intercept, every third slice RLE-compressed, a stray text file and a
    sub-folder; its reference NIfTI; and broken variants for the error tests."""
    import nibabel as nib
    from pydicom.uid import RLELossless, generate_uid

    rng = random.Random(7)
    shape = (48, 40, 30)  # columns (i), rows (j), slices (k)
    hu = ct_like(shape, seed=3).astype(np.int32)
    rot = rotation(0.25, 0.1, -0.35)
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    spacing = np.array([0.8, 0.9, 2.0])  # along i (columns), j (rows), k
    origin = np.array([-20.0, -15.5, 60.0])
    positions = [origin + k * spacing[2] * normal for k in range(shape[2])]

    # Reference NIfTI (LPS grid converted to RAS).
    lps = np.eye(4)
    lps[:3, :3] = rot * spacing
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    os.makedirs(out, exist_ok=True)
    nib.save(nib.Nifti1Image(hu.astype(np.int16), ras), f"{out}/reference.nii.gz")

    study, frame = generate_uid(), generate_uid()

    def write_series(folder, slices, series_uid, compress_every=3, description="test series", drop=None):
        os.makedirs(f"{folder}/sub", exist_ok=True)
        order = list(range(len(slices)))
        numbers = list(range(1, len(slices) + 1))
        rng.shuffle(numbers)
        paths = []
        for k in order:
            if drop is not None and k == drop:
                continue
            stored = (slices[k].T + 1024).astype(np.uint16)  # rows × columns
            ds = dicom_dataset(stored, positions[k], list(row_dir) + list(col_dir), [spacing[1], spacing[0]],
                               numbers[k], series_uid, study, frame, description=description)
            if compress_every and k % compress_every == 0:
                ds.compress(RLELossless)
            name = f"IM{rng.randrange(10**8):08d}"
            path = f"{folder}/sub/{name}" if k % 4 == 1 else f"{folder}/{name}"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        return paths

    slices = [hu[:, :, k] for k in range(shape[2])]
    series_uid = generate_uid()
    write_series(f"{out}/series", slices, series_uid)
    with open(f"{out}/series/notes.txt", "w") as f:
        f.write("scanned on the phantom day\n")

    write_series(f"{out}/missing", slices, generate_uid(), drop=13)

    mixed = f"{out}/mixed"
    write_series(mixed, slices, generate_uid(), description="main")
    write_series(mixed, slices[:10], generate_uid(), compress_every=0, description="scout")
    ambiguous = f"{out}/ambiguous"
    write_series(ambiguous, slices, generate_uid(), description="first")
    write_series(ambiguous, slices, generate_uid(), compress_every=0, description="second")

    truncated = f"{out}/truncated"
    paths = write_series(truncated, slices, generate_uid(), compress_every=0)
    victim = sorted(paths)[5]
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:
        f.truncate(size - 1500)

    same_uid = f"{out}/inconsistent"
    paths = write_series(same_uid, slices, generate_uid(), compress_every=0)
    import pydicom
    ds = pydicom.dcmread(sorted(paths)[3])
    ds.PixelSpacing = ["1.5", "1.5"]
    ds.save_as(sorted(paths)[3])

    tilt = f"{out}/tilt"
    tilted_uid = generate_uid()
    os.makedirs(tilt, exist_ok=True)
    for k in range(shape[2]):
        position = positions[k] + k * 0.6 * col_dir
        stored = (slices[k].T + 1024).astype(np.uint16)
        ds = dicom_dataset(stored, position, list(row_dir) + list(col_dir), [spacing[1], spacing[0]], k + 1,
                           tilted_uid, study, frame)
        ds.save_as(f"{tilt}/slice{k:03d}.dcm", enforce_file_format=True)

    enhanced_ct(f"{out}/enhanced", hu, positions, row_dir, col_dir, spacing, study, frame)


def enhanced_ct(folder, hu, positions, row_dir, col_dir, spacing, study, frame_uid):
    """The same volume as one Enhanced CT multi-frame object with functional groups, frames in
    reverse order so that sorting by position is needed."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, generate_uid

    os.makedirs(folder, exist_ok=True)
    ds = new_dataset(EnhancedCTImageStorage)
    ds.Modality = "CT"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame_uid
    ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    order = list(reversed(range(hu.shape[2])))
    ds.NumberOfFrames = len(order)

    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8f}" for v in list(row_dir) + list(col_dir)]
    shared.PlaneOrientationSequence = Sequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    measures.SliceThickness = "2.0"
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    per_frame = []
    frames = []
    for n, k in enumerate(order):
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        group.PlanePositionSequence = Sequence([position])
        transform = Dataset()
        # Per-frame rescale: alternate slopes so that a reader applying the wrong one shows.
        slope = 1.0 if n % 2 == 0 else 2.0
        transform.RescaleSlope = f"{slope:g}"
        transform.RescaleIntercept = "-1024"
        transform.RescaleType = "HU"
        group.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(group)
        stored = np.round((hu[:, :, k].T + 1024) / slope).astype(np.uint16)
        frames.append(stored)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(frames).tobytes()
    ds.save_as(f"{folder}/enhanced_ct.dcm", enforce_file_format=True)
    # Values the rounding above makes exact: HU + 1024 is even on slope-2 frames only if it was.
    expected = np.zeros(hu.shape, dtype=np.float32)
    for n, k in enumerate(order):
        slope = 1.0 if n % 2 == 0 else 2.0
        expected[:, :, k] = frames[n].T * slope - 1024
    save_raw(f"{folder}/expected.f32", expected)


def pydicom_data(out):
    """Grey-scale files of pydicom's test data in compressed or non-default transfer syntaxes,
    with pydicom's decoding of their stored values."""
    import pydicom
    from pydicom.data import get_testdata_files

    os.makedirs(out, exist_ok=True)
    manifest = []
    skipped = []
    for path in sorted(get_testdata_files()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not a readable DICOM file for pydicom either
            continue
        if "PixelData" not in ds or ds.get("SamplesPerPixel", 1) != 1 or "TransferSyntaxUID" not in ds.file_meta:
            continue
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax in (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian):
            continue
        if ds.get("BitsAllocated", 0) == 1:
            continue
        try:
            pixels = ds.pixel_array
        except Exception as error:  # noqa: BLE001
            skipped.append({"file": path, "reason": f"pydicom cannot decode it: {error}"[:200]})
            continue
        name = os.path.basename(path)
        np.asarray(pixels, dtype="<f4").ravel(order="C").tofile(f"{out}/{name}.f32")
        # Lossy codecs may round differently from one decoder to another.
        lossy = any(word in syntax.name for word in ("Lossy", "Extended", "Baseline")) or \
            syntax.name == "JPEG 2000 Image Compression"
        manifest.append({"file": path, "name": name, "syntax": syntax.name, "lossy": lossy,
                         "count": int(pixels.size)})
    with open(f"{out}/manifest.json", "w") as f:
        json.dump({"files": manifest, "skipped": skipped}, f, indent=1)


def greedy_warp(reference, moving, warp, output):
    from picsl_greedy import Greedy3D

    Greedy3D().execute(f"-d 3 -rf {reference} -rm {moving} {output} -r {warp}")


def sitk_transforms(out):
    """Transforms written by SimpleITK and where they map a few points."""
    import SimpleITK as sitk

    os.makedirs(out, exist_ok=True)
    points = [[0.0, 0.0, 0.0], [10.0, -20.0, 30.0], [-55.5, 12.0, 80.25]]
    euler = sitk.Euler3DTransform((5.0, -3.0, 12.0), 0.1, -0.2, 0.3, (4.0, -2.0, 1.5))
    euler_zyx = sitk.Euler3DTransform((5.0, -3.0, 12.0), 0.1, -0.2, 0.3, (4.0, -2.0, 1.5))
    euler_zyx.SetComputeZYX(True)
    versor = sitk.VersorRigid3DTransform((0.1, 0.2, -0.15, float(np.sqrt(1 - 0.1**2 - 0.2**2 - 0.15**2))))
    versor.SetCenter((1.0, 2.0, 3.0))
    versor.SetTranslation((-7.0, 8.0, 0.5))
    affine = sitk.AffineTransform([1.1, 0.1, 0.0, -0.05, 0.9, 0.2, 0.0, 0.1, 1.05], [3.0, 2.0, 1.0], [10.0, 0.0, -5.0])
    composite = sitk.CompositeTransform([sitk.TranslationTransform(3, (1.0, 2.0, 3.0)), versor])
    expected = {}
    for name, transform in [("euler", euler), ("euler_zyx", euler_zyx), ("versor", versor), ("affine", affine),
                            ("composite", composite)]:
        sitk.WriteTransform(transform, f"{out}/{name}.tfm")
        expected[name] = [list(transform.TransformPoint(p)) for p in points]
    with open(f"{out}/expected.json", "w") as f:
        json.dump({"points": points, "mapped": expected}, f)


def sitk_map_points(transform_path, output):
    """SimpleITK's reading of a transform file we wrote: where it maps a few points."""
    import SimpleITK as sitk

    transform = sitk.ReadTransform(transform_path)
    points = [[0.0, 0.0, 0.0], [10.0, -20.0, 30.0], [-55.5, 12.0, 80.25]]
    with open(output, "w") as f:
        json.dump({"points": points, "mapped": [list(transform.TransformPoint(p)) for p in points]}, f)


def metrics(a_path, b_path, output):
    """Image metrics of SPEC §7 for two images on the same grid, with numpy alone: density by
    the default calibration, NMI on a 64×64 histogram (each image's own range), Dice per
    tissue interval [low, high), MSE and MAE."""
    import nibabel as nib

    def density(hu):
        return np.where(hu <= 0, 1 + hu / 1000.0, 1 + 0.00061 * hu).clip(0.0, 6.714)

    a = density(np.asarray(nib.load(a_path).get_fdata(), dtype=np.float64)).ravel()
    b = density(np.asarray(nib.load(b_path).get_fdata(), dtype=np.float64)).ravel()
    joint, _, _ = np.histogram2d(a, b, bins=64, range=[[a.min(), a.max()], [b.min(), b.max()]])
    p = joint / joint.sum()

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    nmi = (entropy(p.sum(1)) + entropy(p.sum(0))) / entropy(p.ravel())
    dice = {}
    for name, low, high in [("fat", 0.8, 0.97), ("water", 0.97, 1.15), ("bone", 1.15, np.inf), ("body", 0.5, np.inf)]:
        in_a, in_b = (a >= low) & (a < high), (b >= low) & (b < high)
        dice[name] = float(2 * (in_a & in_b).sum() / (in_a.sum() + in_b.sum()))
    with open(output, "w") as f:
        json.dump({"nmi": nmi, "mse": float(((a - b) ** 2).mean()), "mae": float(np.abs(a - b).mean()), "dice": dice}, f)


def greedy_field(reference, matrix, output):
    """Greedy's displacement field (-rc) of an affine matrix file (its RAS convention)."""
    from picsl_greedy import Greedy3D

    Greedy3D().execute(f"-d 3 -rf {reference} -rc {output} -r {matrix}")


def dicom_registration_read(registration, series_file, output):
    """Reads our Deformable Spatial Registration and one slice of a series with pydicom: the
    vector grid as raw float32 (x fastest, triples) and everything else as JSON."""
    import pydicom

    reg = pydicom.dcmread(registration)
    items = [item for item in reg.DeformableRegistrationSequence if "DeformableRegistrationGridSequence" in item]
    assert len(items) == 1, "one item holds the grid"
    item = items[0]
    grid = item.DeformableRegistrationGridSequence[0]
    vectors = np.frombuffer(grid.VectorGridData, dtype="<f4")
    vectors.tofile(f"{output}.f32")
    matrices = {}
    for name in ("PreDeformationMatrixRegistrationSequence", "PostDeformationMatrixRegistrationSequence"):
        matrix_item = getattr(item, name)[0]
        matrices[name] = {
            "type": matrix_item.FrameOfReferenceTransformationMatrixType,
            "matrix": [float(v) for v in matrix_item.FrameOfReferenceTransformationMatrix],
        }
    references = {}
    for series in getattr(reg, "ReferencedSeriesSequence", []):
        references[series.SeriesInstanceUID] = len(series.ReferencedInstanceSequence)
    for study in getattr(reg, "StudiesContainingOtherReferencedInstancesSequence", []):
        for series in study.ReferencedSeriesSequence:
            references[series.SeriesInstanceUID] = len(series.ReferencedInstanceSequence)
    image = pydicom.dcmread(series_file)
    described = {
        "sop_class": str(reg.SOPClassUID),
        "modality": reg.Modality,
        "frame_of_reference": reg.FrameOfReferenceUID,
        "source_frame_of_reference": item.SourceFrameOfReferenceUID,
        "referenced_source_images": len(getattr(item, "ReferencedImageSequence", [])),
        "grid_position": [float(v) for v in grid.ImagePositionPatient],
        "grid_orientation": [float(v) for v in grid.ImageOrientationPatient],
        "grid_dimensions": [int(v) for v in grid.GridDimensions],
        "grid_resolution": [float(v) for v in grid.GridResolution],
        "matrices": matrices,
        "referenced_series": references,
        "patient_name": str(reg.PatientName),
        "study": reg.StudyInstanceUID,
        "series_study": image.StudyInstanceUID,
        "series_frame_of_reference": image.FrameOfReferenceUID,
        "series_patient_name": str(image.PatientName),
        "series_patient_id": image.PatientID,
        "series_modality": image.Modality,
    }
    with open(f"{output}.json", "w") as f:
        json.dump(described, f, indent=1)


STRUCTURES = [
    # name, number, colour, kind, centre (moving frame, mm), size (mm): radii, or for the ring its
    # outer radius, inner radius and half height
    ("Tumour", 1, [255, 0, 0], "sphere", (8.0, -8.0, 6.0), (11.0, 11.0, 11.0)),
    ("Brainstem", 2, [0, 200, 255], "ellipsoid", (-8.0, 8.0, -8.0), (8.0, 9.0, 15.0)),
    ("Ring", 7, [255, 255, 0], "ring", (-4.0, 12.0, 12.0), (10.0, 4.5, 7.0)),
]


def structure_case(out):
    """A planning CT series, and a pseudo-CT and an MR series of the same head in another frame of
    reference and study (rotated 6 degrees, shifted, smoothly deformed by up to 2.8 mm), with an RT
    Structure Set drawn on the pseudo-CT: a sphere, an ellipsoid and a ring (an outer and an inner
    contour per slice: a hole). Broken structure sets for the error tests beside it."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, MRImageStorage, RTStructureSetStorage, generate_uid

    rng = np.random.default_rng(11)
    semi = np.array([30.0, 34.0, 38.0])

    def inside(name, p):
        _, _, _, kind, centre, size = next(s for s in STRUCTURES if s[0] == name)
        d = [p[i] - centre[i] for i in range(3)]
        if kind in ("sphere", "ellipsoid"):
            return sum((d[i] / size[i]) ** 2 for i in range(3)) <= 1.0
        radial = np.sqrt(d[0] ** 2 + d[1] ** 2)
        return (radial <= size[0]) & (radial >= size[1]) & (np.abs(d[2]) <= size[2])

    def anatomy(p, values):
        """values: air, fat, bone, brain, and one per structure; p: (3, ...) moving-frame mm."""
        r = np.sqrt(sum((p[i] / semi[i]) ** 2 for i in range(3)))
        image = np.full(r.shape, values["air"], dtype=float)
        image[r <= 1.0] = values["fat"]
        image[r <= 0.95] = values["bone"]
        brain = r <= 0.85
        texture = values["texture"] * np.sin(p[0] / 5.0) * np.cos(p[1] / 6.0) * np.sin(p[2] / 7.0 + 1.0)
        image[brain] = values["brain"] + texture[brain]
        # What makes the head asymmetric: a nose in front (anterior is −y), one ventricle.
        nose = (p[0] / 7.0) ** 2 + ((p[1] + 33.0) / 7.0) ** 2 + ((p[2] + 8.0) / 10.0) ** 2 <= 1.0
        image[nose & (r > 0.95)] = values["fat"]
        ventricle = ((p[0] - 9.0) / 4.0) ** 2 + ((p[1] + 2.0) / 12.0) ** 2 + ((p[2] - 12.0) / 6.0) ** 2 <= 1.0
        image[brain & ventricle] = values["ventricle"]
        for name, *_ in STRUCTURES:
            image[brain & inside(name, p)] = values[name]
        return image

    ct_values = {"air": -1000, "fat": -100, "bone": 1000, "brain": 35, "texture": 25, "ventricle": 5,
                 "Tumour": 80, "Brainstem": 15, "Ring": 60}
    mr_values = {"air": 0, "fat": 900, "bone": 80, "brain": 500, "texture": 60, "ventricle": 150,
                 "Tumour": 850, "Brainstem": 650, "Ring": 720}

    def grid(shape, spacing, centre):
        origin = np.array(centre) - (np.array(shape) - 1) / 2 * np.array(spacing)
        idx = np.indices(shape, dtype=float)
        return origin, np.stack([origin[d] + idx[d] * spacing[d] for d in range(3)])

    # The moving frame: pseudo-CT and MR on one grid, centred on the head.
    m_shape, m_spacing = (64, 64, 36), (1.2, 1.2, 2.5)
    m_origin, m_points = grid(m_shape, m_spacing, (0.0, 0.0, 0.0))
    pct = np.round(anatomy(m_points, ct_values) + rng.normal(0, 4, m_shape))
    mr = np.round(np.maximum(anatomy(m_points, mr_values) + rng.normal(0, 10, m_shape), 0))

    # The fixed frame: the CT, elsewhere in its scanner's coordinates; fixed point q shows the
    # anatomy at moving point R (q - c) + d(q).
    f_shape, f_spacing, f_centre = (72, 70, 40), (1.0, 1.05, 2.0), np.array([10.0, -5.0, 20.0])
    f_origin, f_points = grid(f_shape, f_spacing, f_centre)
    angle = np.radians(6.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    q = f_points - f_centre[:, None, None, None]
    p = np.einsum("ij,j...->i...", rot, q)
    # Two smooth local displacements of up to 2.5 mm (Gaussian bumps of 10 mm width).
    for centre, push in [((10.0, 5.0, 5.0), (2.5, 1.2, 0.0)), ((-10.0, -8.0, -5.0), (0.0, -2.0, 1.0))]:
        weight = np.exp(-sum((q[d] - centre[d]) ** 2 for d in range(3)) / (2 * 10.0**2))
        for d in range(3):
            p[d] += push[d] * weight
    ct = np.round(anatomy(p, ct_values) + rng.normal(0, 4, f_shape))
    # Each structure where it truly lies on the fixed grid (the answer a carried contour aims at).
    import nibabel as nib
    os.makedirs(f"{out}/truth", exist_ok=True)
    lps = np.diag([f_spacing[0], f_spacing[1], f_spacing[2], 1.0])
    lps[:3, 3] = f_origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    for name, *_ in STRUCTURES:
        truth = inside(name, p).astype(np.uint8)
        nib.save(nib.Nifti1Image(truth, ras), f"{out}/truth/{name}.nii.gz")

    patient = {"PatientName": "Structures^Test", "PatientID": "STR-0042", "PatientBirthDate": "19700101",
               "PatientSex": "O"}
    ct_study, mr_study = generate_uid(), generate_uid()
    ct_frame, mr_frame = generate_uid(), generate_uid()

    def write_series(folder, volume, origin, spacing, study, frame, modality, sop_class, description):
        os.makedirs(folder, exist_ok=True)
        series = generate_uid()
        instances = []
        for k in range(volume.shape[2]):
            position = [origin[0], origin[1], origin[2] + k * spacing[2]]
            ds = dicom_dataset((volume[:, :, k].T + (1024 if modality == "CT" else 0)).astype(np.uint16), position,
                               [1, 0, 0, 0, 1, 0], [spacing[1], spacing[0]], k + 1, series, study, frame,
                               intercept=-1024.0 if modality == "CT" else 0.0, modality=modality,
                               description=description)
            if sop_class != CTImageStorage:
                ds.SOPClassUID = sop_class
                ds.file_meta.MediaStorageSOPClassUID = sop_class
            for key, value in patient.items():
                setattr(ds, key, value)
            ds.SliceThickness = f"{spacing[2]:g}"
            ds.save_as(f"{folder}/slice{k:03d}.dcm", enforce_file_format=True)
            instances.append((ds.SOPClassUID, ds.SOPInstanceUID, position[2]))
        return series, instances

    write_series(f"{out}/ct", ct, f_origin, f_spacing, ct_study, ct_frame, "CT", CTImageStorage, "planning CT")
    pct_series, pct_instances = write_series(f"{out}/pseudo_ct", pct, m_origin, m_spacing, mr_study, mr_frame,
                                             "CT", CTImageStorage, "pseudo-CT")
    write_series(f"{out}/mr", mr, m_origin, m_spacing, mr_study, mr_frame, "MR", MRImageStorage, "T1 MRI")

    def contours_on(z, name):
        _, _, _, kind, centre, size = next(s for s in STRUCTURES if s[0] == name)
        dz = z - centre[2]
        loops = []
        if kind in ("sphere", "ellipsoid"):
            scale = 1.0 - (dz / size[2]) ** 2
            if scale > 0.01:
                loops.append((np.sqrt(scale) * size[0], np.sqrt(scale) * size[1]))
        elif abs(dz) <= size[2]:
            loops += [(size[0], size[0]), (size[1], size[1])]
        result = []
        for ax, ay in loops:
            t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
            points = np.stack([centre[0] + ax * np.cos(t), centre[1] + ay * np.sin(t), np.full_like(t, z)], axis=1)
            result.append(points)
        return result

    def structure_set(path, frame=mr_frame, geometric_type="CLOSED_PLANAR", twist=False):
        ds = new_dataset(RTStructureSetStorage)
        for key, value in patient.items():
            setattr(ds, key, value)
        ds.Modality = "RTSTRUCT"
        ds.StudyInstanceUID = mr_study
        ds.SeriesInstanceUID = generate_uid()
        ds.StructureSetLabel = "MRI contours"
        ds.StructureSetDate, ds.StructureSetTime = "20260101", "120000"
        frame_item = Dataset()
        frame_item.FrameOfReferenceUID = frame
        study_item = Dataset()
        study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study_item.ReferencedSOPInstanceUID = mr_study
        series_item = Dataset()
        series_item.SeriesInstanceUID = pct_series
        images = []
        for sop_class, sop_instance, _ in pct_instances:
            image = Dataset()
            image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = sop_class, sop_instance
            images.append(image)
        series_item.ContourImageSequence = Sequence(images)
        study_item.RTReferencedSeriesSequence = Sequence([series_item])
        frame_item.RTReferencedStudySequence = Sequence([study_item])
        ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
        rois, roi_contours, observations = [], [], []
        for name, number, colour, *_ in STRUCTURES:
            roi = Dataset()
            roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame, name
            roi.ROIGenerationAlgorithm = "MANUAL"
            rois.append(roi)
            contour_items = []
            for sop_class, sop_instance, z in pct_instances:
                for points in contours_on(z, name):
                    if twist and name == "Tumour" and len(contour_items) == 3:
                        points = points.copy()
                        points[[5, 30]] = points[[30, 5]]  # two vertices swapped: the outline crosses itself
                    item = Dataset()
                    image = Dataset()
                    image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID = sop_class, sop_instance
                    item.ContourImageSequence = Sequence([image])
                    item.ContourGeometricType = geometric_type if name == "Brainstem" else "CLOSED_PLANAR"
                    item.NumberOfContourPoints = len(points)
                    item.ContourData = [f"{v:.4f}" for v in points.ravel()]
                    contour_items.append(item)
            roi_contour = Dataset()
            roi_contour.ReferencedROINumber = number
            roi_contour.ROIDisplayColor = colour
            roi_contour.ContourSequence = Sequence(contour_items)
            roi_contours.append(roi_contour)
            observation = Dataset()
            observation.ObservationNumber, observation.ReferencedROINumber = number, number
            observation.RTROIInterpretedType = "GTV" if name == "Tumour" else "ORGAN"
            observation.ROIInterpreter = ""
            observations.append(observation)
        ds.StructureSetROISequence = Sequence(rois)
        ds.ROIContourSequence = Sequence(roi_contours)
        ds.RTROIObservationsSequence = Sequence(observations)
        ds.save_as(path, enforce_file_format=True)

    structure_set(f"{out}/RS.dcm")
    structure_set(f"{out}/RS_other_frame.dcm", frame=ct_frame)
    structure_set(f"{out}/RS_open.dcm", geometric_type="OPEN_PLANAR")
    structure_set(f"{out}/RS_self_intersecting.dcm", twist=True)


def plastimatch_masks(structures, reference, out):
    """plastimatch rasterises an RT Structure Set onto a reference image's grid (a NIfTI file, or
    a DICOM series that dcm2niix converts), one NIfTI mask
    per structure in OUT; contours on one slice combine by even-odd (a contour inside another is
    a hole)."""
    import subprocess
    import tempfile

    if os.path.isdir(reference):
        # plastimatch (Debian's build) reads no DICOM image series: dcm2niix converts it first.
        folder = tempfile.mkdtemp()
        subprocess.run(["dcm2niix", "-z", "y", "-f", "reference", "-o", folder, reference], check=True,
                       stdout=subprocess.DEVNULL)
        reference = f"{folder}/reference.nii.gz"
    subprocess.run(["plastimatch", "convert", "--input", structures, "--fixed", reference,
                    "--output-prefix", out, "--prefix-format", "nii.gz", "--xor-contours"], check=True,
                   stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {
        "nibabel-cases": nibabel_cases,
        "nibabel-read": nibabel_read,
        "dicom-series": dicom_series,
        "pydicom-data": pydicom_data,
        "greedy-warp": greedy_warp,
        "sitk-transforms": sitk_transforms,
        "sitk-map-points": sitk_map_points,
        "metrics": metrics,
        "greedy-field": greedy_field,
        "dicom-registration-read": dicom_registration_read,
        "structure-case": structure_case,
        "plastimatch-masks": plastimatch_masks,
    }[command](*args)
