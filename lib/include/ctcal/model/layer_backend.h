#pragma once
// What a device supplies to THE layer loop, Decoder::run_layers() (model/decoder.h). The loop is
// written once and owns the order of the caller's hooks; a backend only moves weights and runs a
// layer's chunks. For each layer l the loop calls:
//
//   loop.before_layer(l); observer = loop.observer(l);
//   backend.load(l); backend.run(l, observer); backend.release(l, observer);
//   loop.after_layer(l);
//
// between backend.begin(hidden) and backend.end(hidden). The CPU backend (model/decoder.cpp) reads
// and edits each layer's weights on the calling thread; the CUDA backend
// (lib/src/model/cuda/cuda_layers.cpp) streams them from a loader thread into device slots ahead of
// the loop and reduces the observers' ranges on the device.
#include <cstdint>

#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

class LayerBackend {
 public:
  virtual ~LayerBackend();
  // hidden: [total_tokens, hidden], or empty with ForwardOptions::token_ids set (embedded here).
  virtual void begin(RowMatrix& hidden) = 0;
  // Layer `layer`'s weights ready to run (read, edited by loop.edit_weights, on the device).
  virtual void load(int64_t layer) = 0;
  // Runs layer `layer` over every sample, chunk by chunk, calling ForwardOptions::after_chunk after
  // each; shows its hook points to `observer` (may be null).
  virtual void run(int64_t layer, ActivationObserver* observer) = 0;
  // Gives the layer's weights back; throws InputError naming the layer when its output holds NaN
  // or Inf (the CPU throws in run(), at the chunk); hands `observer` what the device reduced.
  virtual void release(int64_t layer, ActivationObserver* observer) = 0;
  // hidden: [total_tokens, hidden], the last layer's output (when LayerLoop::keep_hidden).
  virtual void end(RowMatrix& hidden) = 0;
};

}  // namespace ctcal
