# The vastdrop GPU job: a one-shot container that runs `python -m gpu_job` and exits with its code
# (0 succeeded, 65 bad input, 75 transient, 70 internal; see ../shared/ARCHITECTURE.md section 3).
# Configured only by JOB_* env vars given at launch; this image holds no credentials.
#
#   docker build -t vastdrop-gpu-job .
#   docker run --rm --gpus all -e JOB_ID=... -e JOB_INPUT_URL=... -e JOB_OUTPUT_URL=... \
#       -e JOB_MANIFEST_URL=... vastdrop-gpu-job
#
# Base: the official PyTorch runtime image, torch 2.11.0 built for CUDA 12.8 with cuDNN 9 and its
# matching torchvision (0.26.0), on Ubuntu with a conda Python. torch 2.11 is past the advisories
# on torch.load, which the job uses for its weights (pyproject.toml names them, and sets the same
# floor). CUDA 12.8 covers every GPU generation Vast.ai rents, Blackwell (RTX 50xx, sm_120)
# included; it expects a host driver that supports CUDA 12.8 (>= 570), so the launcher should ask
# Vast for offers with cuda_max_good >= 12.8. Pinned by tag and by digest: this digest is the one
# several independent public projects pin for this tag; if it ever stops resolving, the pull fails
# instead of silently moving to another build.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime@sha256:eee11b3b3872a8c838e35ef48f08b2d5def2080902c7f666831310ca1a0ef2be

LABEL org.opencontainers.image.title="vastdrop-gpu-job" \
      org.opencontainers.image.description="One-shot GPU job: RIFE 4.x interpolation and Real-ESRGAN upscaling of one video, then a verified manifest (python -m gpu_job)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="docker.io/pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime" \
      org.opencontainers.image.base.digest="sha256:eee11b3b3872a8c838e35ef48f08b2d5def2080902c7f666831310ca1a0ef2be"

# NVIDIA_DRIVER_CAPABILITIES: the base asks the NVIDIA container runtime for compute,utility only;
# "video" also mounts libnvidia-encode, without which PyAV's NVENC encoders cannot open and
# JOB_VIDEO_CODEC=auto falls back to libx264 on the CPU.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video

# Fail early, before anything is downloaded, if the base is not what this file assumes:
# Python >= 3.11 (pyproject requires-python) and a CUDA build of torch >= 2.11 (pyproject's floor)
# with torchvision.
RUN python -c "import sys, torch, torchvision; \
assert sys.version_info >= (3, 11), sys.version; \
assert torch.version.cuda, 'torch in the base image is a CPU-only build'; \
assert tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])) >= (2, 11), torch.__version__; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)"

# Model weights, fetched at build time and each verified against a pinned SHA-256 (sha256sum -c
# exits non-zero on a mismatch, which fails the build). Fetched with Python's urllib, which the
# base certainly has (it may lack curl and wget). This layer comes before the code so code changes
# never download the weights again. Files stay root-owned and read-only to the job user.
#
# RIFE 4.26 (Practical-RIFE, MIT): the 4.26 flownet.pkl as mirrored byte-for-byte by HolyWu/vs-rife
#   as the GitHub release asset model/flownet_v4.26.pkl, 24,636,301 bytes. The SHA-256 below is
#   the digest public projects pin for exactly this URL, and also the one recorded for
#   Practical-RIFE's own 4.26 train_log/flownet.pkl (Google Drive archive). It was found in a code
#   index that shows such files without their repository names, so none can be cited here. A pin
#   whose source can be named is the 4.26 *heavy* model's, in EutropicAI/ccvfi
#   ccvfi/config/ifnet_config.py (4cc518e1...; slower, not used here).
#   The directory name "rife-4.26" is the release hint gpu_job.models.rife uses to label the layout
#   it detects (4.25 and 4.26 share one).
# realesr-animevideov3 (Real-ESRGAN v0.2.5.0, BSD-3-Clause), 2,504,012 bytes: SHA-256 from
#   OpenModelDB/open-model-database data/models/4x-realesr-animevideo-v3.json (resources[0]).
# RealESRGAN_x4plus (Real-ESRGAN v0.1.0, BSD-3-Clause), 67,040,989 bytes: SHA-256 from
#   OpenModelDB/open-model-database data/models/4x-realesrgan-x4plus.json (resources[0]); the
#   same digest is in the MODEL_FILES list of sd-webui/stable-diffusion-webui's Docker start
#   script. Not the default upscaler; set
#   JOB_UPSCALE_MODEL=/models/realesrgan/RealESRGAN_x4plus.pth for live-action footage.
RUN set -eu; \
    fetch() { python -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; }; \
    mkdir -p /models/rife-4.26 /models/realesrgan; \
    fetch https://github.com/HolyWu/vs-rife/releases/download/model/flownet_v4.26.pkl /models/rife-4.26/flownet.pkl; \
    echo "45c7f74156704769dc9f85cfcaf8552e1e926f9399dcfa3a553dee88fac6f53f  /models/rife-4.26/flownet.pkl" | sha256sum -c -; \
    fetch https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth /models/realesrgan/realesr-animevideov3.pth; \
    echo "b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d  /models/realesrgan/realesr-animevideov3.pth" | sha256sum -c -; \
    fetch https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth /models/realesrgan/RealESRGAN_x4plus.pth; \
    echo "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1  /models/realesrgan/RealESRGAN_x4plus.pth" | sha256sum -c -; \
    chmod -R a+rX,go-w /models

# Defaults of the container contract; the launcher may override either (or set it empty for the
# non-learned fallback).
ENV JOB_INTERPOLATION_MODEL=/models/rife-4.26/flownet.pkl \
    JOB_UPSCALE_MODEL=/models/realesrgan/realesr-animevideov3.pth

WORKDIR /opt/vastdrop

# Dependencies first (cached while only code changes): exactly the hashed pins of two lock files,
# which tests/test_locks.py checks are current. locks/gpu-job.txt holds what the job imports and
# nothing else, less torch and torchvision: those are the base's CUDA builds, absent from the lock,
# so pip cannot replace them. serverless/requirements-sdk-only.lock is the vastai SDK (the job's
# self-destroy), without its CLI's dependencies. --no-deps: pip resolves nothing here;
# --require-hashes: a file whose digest is not in the lock fails the build.
COPY locks/gpu-job.txt serverless/requirements-sdk-only.lock ./locks/
RUN pip install --no-cache-dir --require-hashes --no-deps -r locks/gpu-job.txt -r locks/requirements-sdk-only.lock

# The job's code: only the packages `python -m gpu_job` imports. vastdrop/ is the shared package
# (env contract, manifest, storage, errors); handlers/, watcher/, tests/ and bench/ are the control
# plane and development tools, which the job never imports, so they stay out of the image.
# --no-deps: the project's own dependencies are the lock's (pyproject's also name the control
# plane's, which the job never imports). The build backend (pyproject's [build-system]) lives only
# in pip's temporary build environment, not in the image.
COPY pyproject.toml ./
COPY vastdrop/ ./vastdrop/
COPY gpu_job/ ./gpu_job/
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build ./*.egg-info \
 && cd / && python -c "import gpu_job.runner, gpu_job.models.rife, gpu_job.models.upscaler, gpu_job.selfdestroy, av, spandrel, vastai; print('gpu_job ok, av', av.__version__)"

# The job runs as an unprivileged user in a scratch directory of its own.
RUN groupadd --gid 10001 job \
 && useradd --uid 10001 --gid job --create-home --shell /usr/sbin/nologin job \
 && mkdir -p /job \
 && chown job:job /job
WORKDIR /job
USER 10001:10001

# One-shot: the job bounds itself with JOB_DEADLINE and reports through its manifest and exit code.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "gpu_job"]
