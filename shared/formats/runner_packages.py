"""The packages Numerai's hosted runner has, per Python, to tell a participant what a model needs.

Copied from `numerai/numerai-predict` at commit RUNNER_COMMIT: each line of
`_LOCKS` is a package of `py3.11/poetry.lock`, `py3.12/poetry.lock` or
`py3.13/poetry.lock` and its version in each ("-": not in that lock).
tests/test_runner_packages.py checks the names against a copy of the locks'
package names (tests/data/numerai_predict_lock_packages.txt).
"""

from __future__ import annotations

from dataclasses import dataclass

RUNNER_COMMIT = "19d1769589f83898a293f398e58c0bb1f0943c61"
LOCK_PYTHONS = ("3.11", "3.12", "3.13")

# A package's import name is its name with "-" as "_", except these.
IMPORT_NAMES = {
    "absl-py": "absl",
    "attrs": "attr",
    "beautifulsoup4": "bs4",
    "cuda-bindings": "cuda.bindings",
    "cuda-pathfinder": "cuda.pathfinder",
    "google-api-core": "google.api_core",
    "google-auth": "google.auth",
    "google-cloud-core": "google.cloud.client",
    "google-cloud-storage": "google.cloud.storage",
    "google-crc32c": "google_crc32c",
    "google-pasta": "pasta",
    "google-resumable-media": "google.resumable_media",
    "googleapis-common-protos": "google.api",
    "grpcio": "grpc",
    "libclang": "clang",
    "markdown-it-py": "markdown_it",
    "nvidia-ml-py": "pynvml",
    "pillow": "PIL",
    "proto-plus": "proto",
    "protobuf": "google.protobuf",
    "python-dateutil": "dateutil",
    "python-dotenv": "dotenv",
    "pyyaml": "yaml",
    "scikit-learn": "sklearn",
    "tensorflow-decision-forests": "tensorflow_decision_forests",
    "tf-keras": "tf_keras",
}

_LOCKS = """
absl-py 2.3.1 2.3.1 2.4.0
aiohappyeyeballs 2.6.1 2.6.1 2.6.1
aiohttp 3.12.15 3.12.15 3.13.3
aiosignal 1.4.0 1.4.0 1.4.0
annotated-types 0.7.0 0.7.0 0.7.0
astunparse 1.6.3 1.6.3 1.6.3
async-timeout 5.0.1 5.0.1 5.0.1
attrs 25.3.0 25.3.0 25.4.0
backoff 2.2.1 2.2.1 2.2.1
beautifulsoup4 4.14.0 4.14.0 4.14.3
cachetools 5.5.2 5.5.2 5.5.2
catboost 1.2.8 1.2.8 1.2.10
certifi 2025.8.3 2025.8.3 2025.11.12
cffi 2.0.0 2.0.0 2.0.0
charset-normalizer 3.4.3 3.4.3 3.4.4
click 8.3.0 8.3.0 8.3.1
cloudpickle 3.1.1 3.1.1 3.1.2
colorama 0.4.6 0.4.6 0.4.6
contourpy 1.3.3 1.3.3 1.3.3
cryptography - - 46.0.5
cuda-bindings - - 12.9.4
cuda-pathfinder - - 1.4.0
curl-cffi 0.13.0 0.13.0 0.13.0
cycler 0.12.1 0.12.1 0.12.1
distro 1.9.0 1.9.0 1.9.0
einops 0.8.1 0.8.1 0.8.2
eval-type-backport 0.2.2 0.2.2 0.3.1
fickling 0.1.4 0.1.4 0.1.9
filelock 3.19.1 3.19.1 3.25.0
flatbuffers 25.9.23 25.9.23 25.12.19
fonttools 4.60.0 4.60.0 4.61.1
frozendict 2.4.6 2.4.6 2.4.7
frozenlist 1.7.0 1.7.0 1.8.0
fsspec 2025.9.0 2025.9.0 2025.12.0
gast 0.6.0 0.6.0 0.6.0
google-api-core 2.25.1 2.25.1 2.30.0
google-auth 2.40.3 2.40.3 2.48.0
google-auth-oauthlib 1.2.2 1.2.2 1.3.0
google-cloud-core 2.4.3 2.4.3 2.5.0
google-cloud-storage 3.4.0 3.4.0 3.9.0
google-crc32c 1.7.1 1.7.1 1.8.0
google-pasta 0.2.0 0.2.0 0.2.0
google-resumable-media 2.7.2 2.7.2 2.8.0
googleapis-common-protos 1.70.0 1.70.0 1.72.0
graphviz 0.21 0.21 0.21
grpcio 1.75.1 1.75.1 1.78.0
h5py 3.14.0 3.14.0 3.15.1
hf-xet 1.1.10 1.1.10 1.3.2
huggingface-hub 0.35.1 0.35.1 0.36.2
idna 3.10 3.10 3.11
jax 0.7.2 0.6.2 0.6.2
jaxlib 0.7.2 0.6.2 0.6.2
jinja2 3.1.6 3.1.6 3.1.6
joblib 1.5.2 1.5.2 1.5.3
keras 3.11.3 3.11.3 3.13.2
kiwisolver 1.4.9 1.4.9 1.4.9
libclang 18.1.1 18.1.1 18.1.1
lightgbm 4.6.0 4.5.0 4.5.0
lightning-utilities 0.15.2 0.14.3 0.14.3
llvmlite 0.44.0 0.44.0 0.44.0
markdown 3.9 3.9 3.10.2
markdown-it-py 4.0.0 4.0.0 4.0.0
markupsafe 3.0.3 3.0.3 3.0.3
matplotlib 3.10.6 3.10.6 3.10.8
mdurl 0.1.2 0.1.2 0.1.2
ml-dtypes 0.5.3 0.5.3 0.5.4
mlxtend 0.23.4 0.23.4 0.23.4
mpmath 1.3.0 1.3.0 1.3.0
multidict 6.6.4 6.6.4 6.7.1
multitasking 0.0.12 0.0.12 0.0.12
namex 0.1.0 0.1.0 0.1.0
narwhals 2.5.0 2.5.0 2.17.0
networkx 3.5 3.5 3.6.1
numba 0.61.2 0.61.2 0.61.2
numerai-era-data 1.0.0 1.0.0 1.0.0
numerai-tools 0.4.3 0.4.3 0.4.3
numerapi 2.20.8 2.20.8 2.22.0
numerblox 1.6.1 1.6.1 1.6.1
numpy 2.1.3 2.1.3 2.2.6
nvidia-cublas-cu12 12.8.4.1 12.8.4.1 12.8.4.1
nvidia-cuda-cupti-cu12 12.8.90 12.8.90 12.8.90
nvidia-cuda-nvrtc-cu12 12.8.93 12.8.93 12.8.93
nvidia-cuda-runtime-cu12 12.8.90 12.8.90 12.8.90
nvidia-cudnn-cu12 9.10.2.21 9.10.2.21 9.10.2.21
nvidia-cufft-cu12 11.3.3.83 11.3.3.83 11.3.3.83
nvidia-cufile-cu12 1.13.1.3 1.13.1.3 1.13.1.3
nvidia-curand-cu12 10.3.9.90 10.3.9.90 10.3.9.90
nvidia-cusolver-cu12 11.7.3.90 11.7.3.90 11.7.3.90
nvidia-cusparse-cu12 12.5.8.93 12.5.8.93 12.5.8.93
nvidia-cusparselt-cu12 0.7.1 0.7.1 0.7.1
nvidia-ml-py - - 13.590.48
nvidia-nccl-cu12 2.27.3 2.27.3 2.27.5
nvidia-nvjitlink-cu12 12.8.93 12.8.93 12.8.93
nvidia-nvshmem-cu12 - - 3.4.5
nvidia-nvtx-cu12 12.8.90 12.8.90 12.8.90
oauthlib 3.3.1 3.3.1 3.3.1
onnx 1.19.0 1.19.0 1.20.1
opt-einsum 3.4.0 3.4.0 3.4.0
optree 0.17.0 0.17.0 0.19.0
packaging 25.0 25.0 25.0
pandas 2.3.2 2.3.2 2.3.3
pandas-ta-classic 0.3.14b2 0.3.14b2 0.3.78
patsy 1.0.1 1.0.1 1.0.2
peewee 3.18.2 3.18.2 4.0.1
pillow 11.3.0 11.3.0 11.3.0
platformdirs 4.4.0 4.4.0 4.9.2
plotly 6.3.0 6.3.0 6.6.0
polars 1.33.1 1.33.1 1.38.1
polars-runtime-32 - - 1.38.1
posthog 6.7.6 6.7.6 6.9.3
propcache 0.3.2 0.3.2 0.4.1
proto-plus 1.26.1 1.26.1 1.27.1
protobuf 5.29.5 5.29.5 5.29.6
pyarrow 21.0.0 18.1.0 18.1.0
pyasn1 0.6.1 0.6.1 0.6.2
pyasn1-modules 0.4.2 0.4.2 0.4.2
pycparser 2.23 2.23 3.0
pydantic 2.11.9 2.11.9 2.12.5
pydantic-core 2.33.2 2.33.2 2.41.5
pydantic-settings 2.11.0 2.11.0 2.13.1
pygments 2.19.2 2.19.2 2.19.2
pyparsing 3.2.5 3.2.5 3.3.2
python-dateutil 2.9.0.post0 2.9.0.post0 2.9.0.post0
python-dotenv 1.1.1 1.1.1 1.2.2
pytorch-lightning 2.5.5 2.5.5 2.6.1
pytz 2025.2 2025.2 2025.2
pyyaml 6.0.3 6.0.3 6.0.3
requests 2.32.5 2.32.5 2.32.5
requests-oauthlib 2.0.0 2.0.0 2.0.0
rich 14.1.0 14.1.0 14.3.3
rsa 4.9.1 4.9.1 4.9.1
ruff - - 0.15.4
scikit-learn 1.6.1 1.6.1 1.6.1
scipy 1.16.2 1.16.2 1.17.1
setuptools 80.9.0 80.9.0 82.0.0
six 1.17.0 1.17.0 1.17.0
skorch 1.2.0 1.2.0 1.3.1
soupsieve 2.8 2.8 2.8.3
statsmodels 0.14.5 0.14.5 0.14.6
stdlib-list 0.11.1 0.11.1 -
sympy 1.14.0 1.14.0 1.14.0
tabpfn 2.2.1 2.2.1 2.2.1
tabpfn-common-utils 0.2.1 0.2.1 0.2.16
tabulate 0.9.0 0.9.0 0.9.0
tenacity 9.1.2 9.1.2 9.1.4
tensorboard 2.19.0 2.19.0 2.20.0
tensorboard-data-server 0.7.2 0.7.2 0.7.2
tensorflow 2.19.0 2.19.0 2.20.0
tensorflow-decision-forests 1.12.0 1.12.0 -
tensorflow-estimator 2.15.0 2.15.0 2.15.0
tensorflow-io-gcs-filesystem 0.37.1 0.37.1 -
termcolor 3.1.0 3.1.0 3.3.0
tf-keras 2.19.0 2.19.0 -
threadpoolctl 3.6.0 3.6.0 3.6.0
torch 2.8.0 2.8.0 2.10.0
torchmetrics 1.8.2 1.8.2 1.8.2
tqdm 4.67.1 4.67.1 4.67.3
treelite 4.4.1 4.4.1 4.6.1
treelite-runtime 3.9.1 3.9.1 3.9.1
triton 3.4.0 3.4.0 3.6.0
typing-extensions 4.15.0 4.15.0 4.15.0
typing-inspection 0.4.1 0.4.1 0.4.2
tzdata 2025.2 2025.2 2025.3
urllib3 2.5.0 2.5.0 2.6.3
websockets 15.0.1 15.0.1 16.0
werkzeug 3.1.3 3.1.3 3.1.6
wheel 0.45.1 0.45.1 0.46.3
wrapt 1.17.3 1.17.3 1.17.3
wurlitzer 3.1.1 3.1.1 -
xgboost 3.0.5 3.0.5 3.0.5
yarl 1.20.1 1.20.1 1.23.0
ydf 0.13.0 0.13.0 0.15.0
ydf-tf - - 2.20.0
yfinance 0.2.66 0.2.66 1.2.0
"""


@dataclass(frozen=True)
class RunnerPackage:
    """A package of the runner's locks: its name and its version per Python (None: absent)."""

    name: str
    versions: dict[str, str | None]


def _parse() -> dict[str, RunnerPackage]:
    """Import name to package, from `_LOCKS`."""
    packages = {}
    for line in _LOCKS.split("\n"):
        if not line:
            continue
        name, *versions = line.split()
        found = {
            python: None if v == "-" else v
            for python, v in zip(LOCK_PYTHONS, versions, strict=True)
        }
        packages[IMPORT_NAMES.get(name, name.replace("-", "_"))] = RunnerPackage(name, found)
    return packages


PACKAGES = _parse()


def runner_package(module: str) -> RunnerPackage | None:
    """The runner's package that provides `module` ("statsmodels.api"), or None."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = PACKAGES.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None
