// The one list of pixelfast's op schemas. Kernels are registered per backend in each op's folder
// (TORCH_LIBRARY_IMPL in its CPU .cpp and CUDA .cu files); autograd and fake tensors in Python.
#include <Python.h>
#include <torch/library.h>

#include "sampler/engine.h"

// Importing pixelfast._C runs the static registrations above and below; the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pixelfast, m) {
  m.def(
      "masked_conv2d(Tensor x, Tensor weight, Tensor? bias, str mask_type, int color_groups) "
      "-> Tensor");
  m.def(
      "masked_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, str mask_type, "
      "int color_groups, bool[2] output_mask) -> (Tensor, Tensor, Tensor)");
  // The PixelCNN residual block (csrc/masked_conv/residual_block.cpp):
  // x + W_out . relu(conv_k(relu(W_in . relu(x) + b_in)) + b + image_bias) + b_out, returning
  // (out, relu(x), hidden_in, hidden), channels-last; only out is differentiable, the others are
  // kept for the backward (hidden has k / 2 spare rows: residual_block_op.h).
  m.def(
      "residual_block(Tensor x, Tensor w_in, Tensor? b_in, Tensor w, Tensor? b, Tensor w_out, "
      "Tensor? b_out, Tensor? image_bias, int color_groups) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "residual_block_backward(Tensor grad_out, Tensor relu_x, Tensor hidden_in, Tensor hidden, "
      "Tensor w_in, Tensor w, Tensor w_out, bool image_bias, int color_groups) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The Gated PixelCNN's gate (csrc/gate): [B, 2n, H, W] -> tanh(a) * sigmoid(b), [B, n, H, W],
  // colour group by colour group, in the input's memory format.
  m.def("gated_activation(Tensor x, int color_groups) -> Tensor");
  m.def("gated_activation_backward(Tensor grad_out, Tensor x, int color_groups) -> Tensor");
  // LSTM scans (csrc/lstm): gates [B, 4h, H, W] -> (h, c, acts), all channels-last; only h is
  // differentiable, c and acts (the activated gates) are kept for the backward.
  m.def(
      "row_lstm(Tensor gates, Tensor weight, Tensor? bias, int color_groups) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "row_lstm_backward(Tensor grad_h, Tensor weight, Tensor h, Tensor c, Tensor acts, "
      "int color_groups) -> (Tensor, Tensor, Tensor)");
  m.def(
      "diagonal_lstm(Tensor gates, Tensor weight, Tensor? bias, int color_groups) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "diagonal_lstm_backward(Tensor grad_h, Tensor weight, Tensor h, Tensor c, Tensor acts, "
      "int color_groups) -> (Tensor, Tensor, Tensor)");
  // The incremental-cache sampler: runs a plan (pixelfast/sampling/plan.py) over the whole image.
  // Returns the levels [B, C, H, W] and, when record_logits, the logits [B, levels, C, H, W].
  // condition: a per-image input map [B, H, W, K] that the plan's condition ops add (for
  // super-resolution, the conditioning network's logits). precision: "fp32", "bf16" (the convs'
  // inputs and weights rounded to bf16, float32 sums) or "tf32" (the same rounded to tf32: the
  // CUDA engine only).
  m.def(
      "sample_cached(Tensor[] weights, int[] buffers, int[] program, Tensor image, Tensor known, "
      "Tensor uniforms, Tensor? labels, float temperature, int levels, bool record_logits, "
      "Tensor? condition=None, str precision=\"fp32\") -> (Tensor, Tensor)");
  // How many CPU engine calls went on with one thread because other programs held the cores
  // (csrc/sampler/engine_cpu.cpp, keep_going); lets a test see that the fallback ran.
  m.def("sampler_solo_runs() -> int", &pixelfast::sampler::sampler_solo_runs);
  // The preemptions within one row after which the team goes on alone; returns the previous one.
  m.def("sampler_solo_after(int preemptions) -> int", &pixelfast::sampler::sampler_solo_after);
  // How many CPU engine calls split the batch by image, and the weight size below which they do
  // (returns the previous one): lets a test force either split.
  m.def("sampler_image_split_runs() -> int", &pixelfast::sampler::sampler_image_split_runs);
  m.def("sampler_split_images_below(int bytes) -> int",
        &pixelfast::sampler::sampler_split_images_below);
  // The CPU engine's float32 matrix-product kernel (auto, generic, avx2, avx512); returns the
  // previous one: lets a test run each kernel the machine has.
  m.def("sampler_gemm_kernel(str kind) -> str", &pixelfast::sampler::sampler_gemm_kernel);
  // The plan format the engine decodes (csrc/sampler/plan.h's lists), for plan.py's check.
  m.def("sampler_plan_format() -> str", &pixelfast::sampler::plan_format);
}
