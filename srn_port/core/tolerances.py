"""The one table of numerical tolerances, each with its reason.

A comparison passes when ``max |ours - reference| <= rel * max |reference|``: errors are
judged relative to the tensor's own magnitude, since float32 round-off scales with it.
Every test and ``srn-port diff`` reads its bounds from here; none is to be loosened to make
a test pass (find the cause instead).

Measured on this project's CPU runs (TF 2.21 CPU with oneDNN, torch 2.13 CPU):
single TF-SAME convolutions and transposed convolutions over 168 size/kernel/stride
configurations: <= 5.6e-7; full models (color, gray, lstm) at width 32 on 64x64 and 48x80:
level outputs <= 3.2e-6, any activation <= 5.2e-6 (the ConvLSTM's h, where TF's and
PyTorch's sigmoid/tanh differ in the last bit); width-4 goldens: 0.0 for color, <= 2.3e-6
for gray (batch 3), lstm see 'chained_lstm'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Tolerance:
    rel: float  # allowed max abs error as a fraction of max |reference|
    reason: str


TOLERANCES: Dict[str, Tolerance] = {
    "exact": Tolerance(
        0.0,
        "bilinear resize, concat, slicing and single IEEE additions: srn-port reproduces TF's "
        "CPU kernel operation for operation in float32 (docs/tf-numerics.md §2.1), so any "
        "difference at all is a bug (wrong sampling mode, wrong size, wrong input)."),
    "layer": Tolerance(
        1e-5,
        "one convolution, transposed convolution, ResNet block or ConvLSTM step on identical "
        "inputs: TF (oneDNN/Eigen) and PyTorch sum the K*K*C products in different orders, "
        "and their sigmoid/tanh differ by an ulp; measured <= 5.6e-7 for single convs, "
        "<= 2e-6 for the ConvLSTM. 1e-5 leaves room for other CPUs' kernels while a real "
        "bug (a shifted pixel, a swapped gate, a wrong weight) is 1e-2 or more."),
    "chained": Tolerance(
        2e-5,
        "an activation computed through all earlier layers (up to ~120 convolutions over "
        "three levels): the per-layer round-off above accumulates; measured <= 5.2e-6 at "
        "width 32, i.e. 4x headroom, still three orders of magnitude below a real bug. Also "
        "every end_point of a net ported with srn_port.port: tf-slim's resnet_v1_50 (53 "
        "convolutions with batch norm, 64x64) <= 2.4e-6, inception_v3 (depth multiplier 0.1, "
        "107x107) <= 8.6e-7."),
    "chained_lstm": Tolerance(
        5e-4,
        "a chained activation computed from the ConvLSTM state without a skip sum in between "
        "(rnn_state at levels 1-2, convLSTM_state, convLSTM, dec3_3..dec3_1, dec2_4): the cell "
        "maps a large input through saturated gates to a state of ~1 (|enc3_4| ~270 -> ~2 at "
        "level 2 of the width-4 lstm golden, whose random weights amplify level to level), so "
        "upstream round-off, carried at the input's scale, is ~100x larger relative to the "
        "cell's output until cat2 adds the encoder's magnitude back. An ill-conditioned "
        "function, not a porting error: there TF itself is 7.2e-5 from a float64 evaluation "
        "and PyTorch 9.1e-5; measured TF vs PyTorch <= 9.2e-5 (float32 vs float64 9.8e-5 at "
        "128x128). Models with O(1) activations (width 32, trained) stay <= 5e-6. 5e-4 is 5x "
        "headroom and still 2-3 orders below a gate-order or forget-bias bug (> 1e-1)."),
    "gradient": Tolerance(
        5e-3,
        "a variable's gradient of the original training loss (float32, the whole three-level "
        "graph backwards): bias and kernel gradients are sums over every pixel of terms that "
        "nearly cancel, so float32 round-off is large relative to the result; measured at width "
        "32 (make_checkpoint weights, 64x64): srn-port vs TF <= 8.5e-4 of max |grad| (lstm), "
        "while TF itself is 6.9e-4 and srn-port 3.7e-4 from a float64 evaluation (gray). A "
        "missing stop_gradient between levels, the one thing training adds, gives >= 0.39."),
    "optimizer": Tolerance(
        1e-6,
        "weights after TF-rule Adam steps fed the same gradients (elementwise float32): "
        "TFAdam follows TF's ApplyAdam operation for operation, and the slots m, v come out "
        "bit-identical; TF's vectorised kernel rounds (m * alpha) / (sqrt(v) + eps) "
        "differently in 0.1% of elements (one ulp, 3e-8 against max |w| 3 over 20 steps). "
        "torch.optim.Adam's rule is 2e-4 away after 20 steps. Also the learning rate of the "
        "polynomial decay (bit-identical to TF's since tf_polynomial_decay multiplies by the "
        "float32 reciprocal of decay_steps, as TF's Grappler rewrites the division; a true "
        "division was 2.2e-7 off within 20 steps, 3.1e-3 near the end of a 523100-step run)."),
    "trajectory_loss": Tolerance(
        1e-5,
        "each step's loss over 20 training steps continuing a TF run (the trained example: its "
        "weights, Adam slots, beta powers and step), srn-port against TF's original training "
        "op on the same batches, float32: the per-step gradient round-off (see 'gradient') "
        "enters the weights through Adam; measured <= 4.3e-7. Starting torch.optim.Adam afresh "
        "instead of resuming TF's state is 5.5e-3 away."),
    "trajectory_float64": Tolerance(
        1e-13,
        "20 training steps in float64 on both sides, TF's original training op built in "
        "float64 (the float32 checkpoint widened: weights, Adam slots, beta powers, step) "
        "against srn-port's model.double() with TFAdam and tf_polynomial_decay, same float64 "
        "batches (color, width 4, 2x32x32): each step's loss, and every weight and Adam slot "
        "after the last step. The same algorithm, so only float64 round-off separates them "
        "(no float32 sign noise in Adam's steps): measured losses <= 2.2e-16, weights <= "
        "3.2e-16, slots <= 7.9e-16; 1e-13 is >= 100x that. Real bugs are >= 1000x above it: "
        "TFAdam's float32 scalar arithmetic on float64 weights 9.6e-11 (weights; losses "
        "9.0e-10), a same-size resize through the float32 kernel 2.8e-9, the decay's true "
        "division instead of TF's reciprocal 1.3e-7 (losses 1.9e-6), torch.optim.Adam 1.1e-3, "
        "no stop_gradient between levels 2.4e-3. Not for the lstm variant: the ConvLSTM state "
        "is resized between levels, and TF's ResizeBilinearGrad takes float32 gradients in a "
        "float64 graph too (1.1e-7 from srn-port's for one resize), measured losses 1.5e-12, "
        "weights 9.9e-11 after 20 steps."),
    "data_parallel": Tolerance(
        1e-5,
        "the loss of each step of a run in N torchrun processes against one process with the "
        "same global batch: the same samples and arithmetic, except that DDP averages the N "
        "partial gradients (a different summation order), which Adam then turns into weight "
        "changes of up to lr where a gradient is near 0; measured 9e-8 (2 gloo processes, "
        "width 2, 3 steps). A wrong split of the batch changes the first loss by ~1e-1."),
    "output": Tolerance(
        1e-5,
        "the level outputs of the whole model: the target 'float32 round-off' for a converted "
        "model (max abs error <= 1e-5 x max |output|); measured <= 3.2e-6. Also the logits "
        "of a net ported with srn_port.port (the model's return value): resnet_v1_50 1.9e-6, "
        "inception_v3 6.1e-7."),
    "reduced_fp16": Tolerance(
        1e-2,
        "level outputs computed with a 10-bit significand (fp16 autocast, or TF32 "
        "convolutions) against IEEE float32: every convolution rounds its operands to "
        "unit round-off 4.9e-4, so the relative error is ~1e-3 from the first convolution on "
        "and does not grow much; measured on the CPU (fp16 autocast; TF32 emulated by "
        "rounding, srn_port.nn.precision.emulate_rounding) <= 3.8e-3 on the width-4 goldens "
        "and 1.9e-3 on the trained example. Not a parity tolerance: it bounds what reduced "
        "precision may cost, so that a path that ignores autocast (error 0) or computes "
        "something else (> 1e-1) is told apart."),
    "reduced_bf16": Tolerance(
        6e-2,
        "level outputs under bf16 autocast against IEEE float32: bfloat16's 7-bit "
        "significand (unit round-off 3.9e-3) gives ~1e-2 from the first convolution on; "
        "measured on the CPU <= 2.9e-2 on the width-4 goldens (color, level 2), 1.8e-2 on the "
        "trained example, and a compiled bf16 forward 1.7e-2 from the eager bf16 one (lstm, "
        "width 4: Inductor fuses and rounds elsewhere). 2x headroom over the worst; a wrong "
        "layer is > 1e-1."),
    "metric": Tolerance(
        1e-9,
        "SSIM map of srn_port.data.metrics against scikit-image (values <= 1): both compute "
        "E[x^2] - E[x]^2 in float64 on 8-bit magnitudes (E[x]^2 up to 6.5e4), with "
        "different filters (OpenCV's separable one, SciPy's) summing in different orders; "
        "measured <= 1.1e-12 on the example photos. A wrong window, sigma, constant or "
        "border rule moves the map by 1e-3 or more."),
    "frame_rate": Tolerance(
        1e-3,
        "a video's frame rate as written by OpenCV's writer against the input's: OpenCV keeps "
        "the rate to 3 decimals (measured on mp4, avi, mkv, mov: 30000/1001 -> 29.97 and "
        "24000/1001 -> 23.976, 1.0e-6 relative; 1/3 -> 0.333, 1.0e-3); a rate it cannot keep "
        "(MJPG in .avi turns 90000 fps into 600) is off by far more and refused."),
}


def within(max_abs_err: float, ref_max_abs: float, tolerance: Tolerance) -> bool:
    """True when the error is inside the tolerance (exact tolerances demand 0)."""
    return max_abs_err <= tolerance.rel * ref_max_abs


#: Ops that srn-port computes operation-for-operation as TF does (no summation order).
EXACT_OPS = frozenset({"resize", "resize_state", "concat", "add", "lstm_h"})


def node_tolerance_keys(graph, level: int, isolate: bool = False) -> Dict[str, str]:
    """Which TOLERANCES entry judges each node of one level.

    Isolated (each node fed the reference's own inputs): exact ops 'exact', layers 'layer'.
    Chained (a normal run): a node is 'exact' only if its op is exact and all its inputs
    are (the network input is; a later level's previous output is not); the level output
    ``dec1_0`` is judged as 'output'; a node computed from the ConvLSTM state (a later
    level's ``prev_state`` or an ``lstm`` node) with no skip sum ('add') in between,
    'chained_lstm'; everything else 'chained'.
    """
    keys: Dict[str, str] = {}
    exact = {"input"} | ({"prev_output", "prev_state"} if level == 0 else set())
    from_state = {"prev_state"} if level > 0 else set()
    for node in graph:
        if isolate:
            keys[node.name] = "exact" if node.op in EXACT_OPS else "layer"
            continue
        if node.op in EXACT_OPS and all(i in exact for i in node.inputs):
            exact.add(node.name)
            keys[node.name] = "exact"
        elif node.name == "dec1_0":
            keys[node.name] = "output"
        elif node.op != "add" and (node.op == "lstm" or from_state.intersection(node.inputs)):
            from_state.add(node.name)
            keys[node.name] = "chained_lstm"
        else:
            keys[node.name] = "chained"
    return keys
