#!/usr/bin/env bash
# Installs what the tests compare against: dcm2niix, dciodvfy (dicom3tools) and the C toolchain pieces the DICOM codecs
# build with (Debian packages), Mesa's software Vulkan (lavapipe), Xvfb and ImageMagick for the
# app's GPU and real-window tests, and nibabel, pydicom (+ codecs and test data), SimpleITK and
# Greedy (PyPI), and a real head CT (Debian's invesalius-examples, fetched into target/real-ct/ by
# fetch-real-ct.sh). Safe to run again; needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(dcm2niix dicom3tools plastimatch chromium cmake pkg-config mesa-vulkan-drivers libvulkan1 xvfb xauth imagemagick libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxi6 libxrandr2)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "real head CT: $(bash scripts/fetch-real-ct.sh)"

python="${DIFFEOREG_PYTHON:-python3}"
"$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/reference/requirements.txt
echo "test tools ready: $(command -v dcm2niix), $("$python" -c 'import nibabel, pydicom, SimpleITK; print("nibabel", nibabel.__version__, "pydicom", pydicom.__version__, "SimpleITK", SimpleITK.Version_VersionString())')"
