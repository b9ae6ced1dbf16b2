#include "ctcal/model/layer_backend.h"

namespace ctcal {

// Out of line: LayerBackend's vtable lives in this one translation unit.
LayerBackend::~LayerBackend() = default;

}  // namespace ctcal
