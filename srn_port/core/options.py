"""The choices of the deblur pipeline, without torch or OpenCV, so that the command line can
offer them at start-up (see :mod:`srn_port.api.deblur` for what each one does)."""

MODES = ("full", "original")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
#: The original test()'s placeholder size (run_model.py --height/--width defaults).
ORIGINAL_CANVAS = (720, 1280)
#: Tile overlap in pixels (``tile`` mode). A multiple of 16 so that every tile starts on
#: the 16-pixel grid of the untiled run (the network's strided convolutions and its
#: x0.5 resizes see the same sampling phase); measured effect: see ``deblur_image``.
DEFAULT_OVERLAP = 64
#: File extensions read and written (OpenCV codecs); the output keeps the input's format.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Video containers read and written (OpenCV's VideoCapture/VideoWriter; frames only).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")

#: Inference backends of deblur and evaluate: ``auto`` picks by the WEIGHTS file (``.onnx``:
#: ONNX Runtime; anything else: torch, a ``.pt2`` as its torch.export program).
BACKENDS = ("auto", "torch", "onnxruntime")
