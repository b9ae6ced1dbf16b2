#pragma once
// The gated DeltaNet's shape (model/gated_deltanet.h) as a model's config gives it: one place for
// the loader (Qwen3-Next's fused in-projections are split by it) and the layer that runs it.
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

GatedDeltaNetShape deltanet_shape(const ModelConfig& c);

}  // namespace ctcal
